import { useState, type FormEvent } from 'react';
import { api } from '../api';
import { Badge, ConfirmAction, ErrorMessage, Field, Loaded, PageHeader, ProgressBar, formatAge, formatBytes, formatTime, useAction, useResource, type Resource } from '../components';
import { downloadText, invalidFields } from '../forms';
import { newestFirst, useAllPages } from '../paged';
import { useSession } from '../session';
import type { ConfigServer, ProcessServer, RegistrationKey, Vault } from '../types';

/** `POST /api/v1/vaults` answer: storeRecoveryKey only when the vault created the store. */
type CreatedVault = Vault & { storeRecoveryKey?: string };

function CreateVault({ onCreated }: { onCreated(v: CreatedVault): void }) {
  const empty = { name: '', location: '', storeUrl: '', passphrase: '' };
  const [values, setValues] = useState(empty);
  const { busy, error, run } = useAction();
  const bad = invalidFields(error);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const body = {
        name: values.name.trim(),
        location: values.location.trim(),
        storeUrl: values.storeUrl.trim(),
        ...(values.passphrase ? { storePassphrase: values.passphrase } : {}),
      };
      const created = await api.post<CreatedVault>('/api/v1/vaults', body);
      setValues(empty);
      onCreated(created);
    });
  };
  const text = (key: keyof typeof empty, field: string, type = 'text') => (props: { id: string; 'aria-describedby'?: string }) => (
    <input
      {...props}
      type={type}
      value={values[key]}
      autoComplete={type === 'password' ? 'new-password' : 'off'}
      aria-invalid={bad.has(field) || undefined}
      onChange={(e) => setValues({ ...values, [key]: e.target.value })}
    />
  );
  return (
    <form onSubmit={submit} noValidate aria-label="Create vault">
      <Field label="Vault name">{text('name', 'name')}</Field>
      <Field label="Location" hint="Where the vault's recovery site is, e.g. west.">
        {text('location', 'location')}
      </Field>
      <Field label="Store URL" hint="file://, azblob:// or s3:// — where recovery points are kept.">
        {text('storeUrl', 'storeUrl')}
      </Field>
      <Field label="Store passphrase (optional)" hint="With a passphrase the vault creates the store (or opens the one there) and keeps the passphrase sealed. Replication needs it.">
        {text('passphrase', 'storePassphrase', 'password')}
      </Field>
      <ErrorMessage error={error} />
      <button type="submit" className="primary" disabled={busy}>
        {busy ? 'Creating…' : 'Create vault'}
      </button>
    </form>
  );
}

/** A vault's registration keys: list, download a new one (shown once, saved as a file), revoke. */
function RegistrationKeys({ vault }: { vault: Vault }) {
  const session = useSession();
  const keys = useResource<{ items: readonly RegistrationKey[] }>(`/api/v1/vaults/${encodeURIComponent(vault.id)}/registration-keys`, 5000);
  const [issued, setIssued] = useState<{ expiresAt: string } | null>(null);
  const { busy, error, run } = useAction();
  const configure = session.can('configure');
  const download = () =>
    run(async () => {
      const key = await api.post<RegistrationKey & { key: string }>(`/api/v1/vaults/${encodeURIComponent(vault.id)}/registration-keys`, {});
      downloadText(`${vault.name}.lifeboat-registration-key`, `${key.key}\n`);
      setIssued({ expiresAt: key.expiresAt });
      keys.reload();
    });
  return (
    <section aria-label={`Registration keys of ${vault.name}`}>
      <h3>Registration keys of {vault.name}</h3>
      <p className="muted">A configuration server registers with a key; a key is valid 5 days.</p>
      {configure ? (
        <button type="button" className="primary" disabled={busy} onClick={() => void download()}>
          Download registration key
        </button>
      ) : null}
      <ErrorMessage error={error} />
      {issued ? (
        <p className="notice" role="status">
          <strong>Registration key saved as {vault.name}.lifeboat-registration-key — valid until {formatTime(issued.expiresAt)}.</strong> Keep it safe: it cannot be
          downloaded again.
        </p>
      ) : null}
      <Loaded resource={keys}>
        {(k) =>
          k.items.length === 0 ? (
            <p className="muted">No registration key issued.</p>
          ) : (
            <table>
              <caption>Registration keys of {vault.name}</caption>
              <thead>
                <tr>
                  <th scope="col">Created</th>
                  <th scope="col">Expires</th>
                  <th scope="col">State</th>
                  {configure ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {newestFirst(k.items, (x) => x.createdAt).map((key) => {
                  const expired = new Date(key.expiresAt).getTime() <= Date.now();
                  const state = key.revoked ? 'revoked' : expired ? 'expired' : 'valid';
                  return (
                    <tr key={key.id}>
                      <td>{formatTime(key.createdAt)}</td>
                      <td>{formatTime(key.expiresAt)}</td>
                      <td>
                        <Badge value={state} />
                      </td>
                      {configure ? (
                        <td>
                          {state === 'valid' ? (
                            <ConfirmAction
                              label="Revoke"
                              title="Revoke registration key"
                              confirmLabel="Revoke key"
                              danger
                              onConfirm={async () => {
                                await api.del(`/api/v1/vaults/${encodeURIComponent(vault.id)}/registration-keys/${encodeURIComponent(key.id)}`);
                                keys.reload();
                              }}
                            >
                              <p>
                                Configuration servers can no longer register with the key created {formatTime(key.createdAt)}. Servers already registered keep
                                working.
                              </p>
                            </ConfirmAction>
                          ) : null}
                        </td>
                      ) : null}
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </section>
  );
}

function RefreshServer({ server, onDone }: { server: ConfigServer; onDone(): void }) {
  const { busy, error, run } = useAction();
  const [requested, setRequested] = useState(false);
  const refresh = () =>
    run(async () => {
      await api.post(`/api/v1/config-servers/${encodeURIComponent(server.id)}/refresh`, {});
      setRequested(true);
      onDone();
    });
  return (
    <>
      <button type="button" disabled={busy} aria-label={`Refresh ${server.name}`} onClick={() => void refresh()}>
        Refresh
      </button>
      {requested ? (
        <span role="status"> Refresh requested: discovery runs at the server's next heartbeat.</span>
      ) : null}
      <ErrorMessage error={error} />
    </>
  );
}

function ConfigServers({ vaults, servers }: { vaults: readonly Vault[]; servers: Resource<readonly ConfigServer[]> }) {
  const session = useSession();
  const configure = session.can('configure');
  return (
    <Loaded resource={servers}>
      {(list) =>
        list.length === 0 ? (
          <p className="muted">No configuration server registered: download a registration key and register one.</p>
        ) : (
          <>
            {vaults
              .filter((v) => list.some((s) => s.vaultId === v.id))
              .map((v) => (
                <table key={v.id}>
                  <caption>Configuration servers of {v.name}</caption>
                  <thead>
                    <tr>
                      <th scope="col">Name</th>
                      <th scope="col">Address</th>
                      <th scope="col">Version</th>
                      <th scope="col">Health</th>
                      <th scope="col">Last heartbeat</th>
                      <th scope="col">Last refresh</th>
                      {configure ? <th scope="col">Actions</th> : null}
                    </tr>
                  </thead>
                  <tbody>
                    {list
                      .filter((s) => s.vaultId === v.id)
                      .map((s) => (
                        <tr key={s.id}>
                          <th scope="row">{s.name}</th>
                          <td>{s.address}</td>
                          <td>{s.version}</td>
                          <td>
                            <Badge value={s.health} />
                          </td>
                          <td>{formatAge(s.lastHeartbeatAt)}</td>
                          <td>{s.lastRefreshAt ? formatTime(s.lastRefreshAt) : 'never'}</td>
                          {configure ? (
                            <td>
                              <RefreshServer server={s} onDone={servers.reload} />
                            </td>
                          ) : null}
                        </tr>
                      ))}
                  </tbody>
                </table>
              ))}
          </>
        )
      }
    </Loaded>
  );
}

function ProcessServers({ configServers }: { configServers: readonly ConfigServer[] }) {
  const servers = useAllPages<ProcessServer>('/api/v1/process-servers', 5000);
  const csName = (id: string) => configServers.find((c) => c.id === id)?.name ?? id;
  return (
    <Loaded resource={servers}>
      {(list) =>
        list.length === 0 ? (
          <p className="muted">No process server yet: each configuration server brings a built-in one when it registers.</p>
        ) : (
          <table>
            <caption>Process servers</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Configuration server</th>
                <th scope="col">Address</th>
                <th scope="col">Version</th>
                <th scope="col">Health</th>
                <th scope="col">Last heartbeat</th>
                <th scope="col">Spool</th>
                <th scope="col">Throughput</th>
              </tr>
            </thead>
            <tbody>
              {list.map((p) => (
                <tr key={p.id}>
                  <th scope="row">{p.name}</th>
                  <td>{csName(p.configServerId)}</td>
                  <td>{p.address}</td>
                  <td>{p.version}</td>
                  <td>
                    <Badge value={p.health} />
                  </td>
                  <td>{formatAge(p.lastHeartbeatAt)}</td>
                  <td>
                    {p.spoolLimitBytes > 0 ? (
                      <ProgressBar percent={(100 * p.spoolUsedBytes) / p.spoolLimitBytes} label={`Spool of ${p.name}`} />
                    ) : null}
                    <span className="muted">
                      {formatBytes(p.spoolUsedBytes)} of {p.spoolLimitBytes > 0 ? formatBytes(p.spoolLimitBytes) : 'no limit reported'}
                    </span>
                  </td>
                  <td>{formatBytes(p.throughputBytesPerSec)}/s</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      }
    </Loaded>
  );
}

export function Infrastructure() {
  const session = useSession();
  const vaults = useAllPages<Vault>('/api/v1/vaults', 5000);
  const configServers = useAllPages<ConfigServer>('/api/v1/config-servers', 5000);
  const [created, setCreated] = useState<CreatedVault | null>(null);
  const configure = session.can('configure');
  return (
    <>
      <PageHeader title="Infrastructure" />
      <section className="panel" aria-labelledby="infra-vaults">
        <h2 id="infra-vaults">Vaults</h2>
        <Loaded resource={vaults}>
          {(list) =>
            list.length === 0 ? (
              <p className="muted">No vault yet.</p>
            ) : (
              <table>
                <caption>Vaults</caption>
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Location</th>
                    <th scope="col">Store URL</th>
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((v) => (
                    <tr key={v.id}>
                      <th scope="row">{v.name}</th>
                      <td>{v.location}</td>
                      <td>
                        <code>{v.storeUrl}</code>
                      </td>
                      <td>{formatTime(v.createdAt)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
        {created ? (
          <div className="notice" role="status">
            <p>Vault {created.name} created.</p>
            {created.storeRecoveryKey ? (
              <>
                <p>
                  <strong>Save this now:</strong> the store's recovery key is shown this once and never again. It opens the store if the passphrase is lost.
                </p>
                <p>
                  <label htmlFor="store-recovery-key">Store recovery key</label>
                  <input id="store-recovery-key" readOnly value={created.storeRecoveryKey} onFocus={(e) => e.target.select()} />
                </p>
                <button type="button" onClick={() => setCreated(null)}>
                  I have saved it
                </button>
              </>
            ) : null}
          </div>
        ) : null}
        {configure ? (
          <>
            <h3>Create vault</h3>
            <CreateVault
              onCreated={(v) => {
                setCreated(v);
                vaults.reload();
              }}
            />
          </>
        ) : null}
      </section>
      <section className="panel" aria-labelledby="infra-keys">
        <h2 id="infra-keys">Registration keys</h2>
        <Loaded resource={vaults}>{(list) => list.map((v) => <RegistrationKeys key={v.id} vault={v} />)}</Loaded>
      </section>
      <section className="panel" aria-labelledby="infra-config-servers">
        <h2 id="infra-config-servers">Configuration servers</h2>
        <Loaded resource={vaults}>{(list) => <ConfigServers vaults={list} servers={configServers} />}</Loaded>
      </section>
      <section className="panel" aria-labelledby="infra-process-servers">
        <h2 id="infra-process-servers">Process servers</h2>
        <ProcessServers configServers={configServers.data ?? []} />
      </section>
    </>
  );
}
