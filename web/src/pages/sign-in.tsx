import { useState, type FormEvent } from 'react';
import { ErrorMessage, Field, useAction } from '../components';
import { useSession } from '../session';

/** Sign in with a user name and password (a session of 12 hours), or with an API token. */
export function SignIn() {
  const session = useSession();
  const [useToken, setUseToken] = useState(false);
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [token, setToken] = useState('');
  const { busy, error, run } = useAction();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      if (useToken) await session.signInWithToken(token.trim());
      else await session.signIn(name.trim(), password);
    });
  };
  return (
    <main className="sign-in" id="main">
      <h1>Sign in to Lifeboat</h1>
      {session.notice ? <p role="status">{session.notice}</p> : null}
      <form onSubmit={submit}>
        {useToken ? (
          <Field label="API token" hint="A token made with POST /api/v1/tokens or printed by the first start of the server.">
            {(p) => <input {...p} type="password" autoComplete="off" required value={token} onChange={(e) => setToken(e.target.value)} />}
          </Field>
        ) : (
          <>
            <Field label="User name">
              {(p) => <input {...p} autoComplete="username" required value={name} onChange={(e) => setName(e.target.value)} />}
            </Field>
            <Field label="Password">
              {(p) => <input {...p} type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />}
            </Field>
          </>
        )}
        <ErrorMessage error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <button type="button" className="link" onClick={() => setUseToken(!useToken)}>
          {useToken ? 'Sign in with a user name and password' : 'Sign in with an API token'}
        </button>
      </form>
    </main>
  );
}
