import { useState } from 'react';
import { api, ApiError } from './api';
import { ConfirmAction, Field } from './components';

/**
 * The signed-in user's own password (`PUT /api/v1/me/password`): the current one, the
 * new one twice. A user who never had one gets the vault's answer (a user manager sets
 * the first: `lifeboat user set-password NAME`).
 */
export function ChangePassword() {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [again, setAgain] = useState('');
  const [done, setDone] = useState(false);
  const change = async () => {
    setDone(false);
    if (next !== again) throw new ApiError(400, 'VALIDATION', 'the new password and its repetition differ');
    await api.put('/api/v1/me/password', { currentPassword: current, password: next });
    setCurrent('');
    setNext('');
    setAgain('');
    setDone(true);
  };
  return (
    <>
      <ConfirmAction label="Change password" title="Change your password" confirmLabel="Change password" onConfirm={change}>
        <Field label="Current password">
          {(p) => <input {...p} type="password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.target.value)} />}
        </Field>
        <Field label="New password" hint="12 to 256 characters.">
          {(p) => <input {...p} type="password" autoComplete="new-password" required value={next} onChange={(e) => setNext(e.target.value)} />}
        </Field>
        <Field label="New password again">
          {(p) => <input {...p} type="password" autoComplete="new-password" required value={again} onChange={(e) => setAgain(e.target.value)} />}
        </Field>
      </ConfirmAction>
      {done ? (
        <span role="status" className="who">
          Password changed
        </span>
      ) : null}
    </>
  );
}
