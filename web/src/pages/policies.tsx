import { useState, type FormEvent } from 'react';
import { api } from '../api';
import { ConfirmAction, ErrorMessage, Field, Loaded, PageHeader, formatDuration, useAction } from '../components';
import { invalidFields, numberOrUndefined } from '../forms';
import { useAllPages } from '../paged';
import { useSession } from '../session';
import type { ReplicationPolicy, Vault } from '../types';

/** The API's defaults (src/core/policy.ts POLICY_LIMITS), in the units the form shows. */
const DEFAULTS = { rpoMinutes: '15', retentionHours: '24', appMinutes: '240', crashSeconds: '300' };

interface PolicyValues {
  name: string;
  rpoMinutes: string;
  retentionHours: string;
  appMinutes: string;
  crashSeconds: string;
}

function valuesOf(p: ReplicationPolicy): PolicyValues {
  return {
    name: p.name,
    rpoMinutes: String(p.rpoThresholdSeconds / 60),
    retentionHours: String(p.retentionHours),
    appMinutes: String(p.appConsistentFrequencyMinutes),
    crashSeconds: String(p.crashConsistentFrequencySeconds),
  };
}

/** The body the API takes; empty numeric fields are left out (the API's default applies on create). */
function bodyOf(v: PolicyValues): Record<string, unknown> {
  const body: Record<string, unknown> = { name: v.name.trim() };
  const put = (key: string, n: number | undefined) => {
    if (n !== undefined) body[key] = n;
  };
  put('rpoThresholdSeconds', numberOrUndefined(v.rpoMinutes, 60));
  put('retentionHours', numberOrUndefined(v.retentionHours));
  put('appConsistentFrequencyMinutes', numberOrUndefined(v.appMinutes));
  put('crashConsistentFrequencySeconds', numberOrUndefined(v.crashSeconds));
  return body;
}

/** A duration without a trailing zero unit: "15 min", "1 h", "2 min 30 s". */
export function shortDuration(seconds: number): string {
  return formatDuration(seconds).replace(/ 0 (s|min|h)$/, '');
}

/** A policy's app-consistent frequency as words: "4 h", "off". */
export function appFrequency(minutes: number): string {
  return minutes === 0 ? 'off' : shortDuration(minutes * 60);
}

/** The policy fields, shared by "Create policy" and "Edit"; inputs the API named are aria-invalid. */
function PolicyFields({ values, onChange, error }: { values: PolicyValues; onChange(v: PolicyValues): void; error: unknown }) {
  const bad = invalidFields(error);
  const input = (key: keyof PolicyValues, field: string, type: 'text' | 'number') => (props: { id: string; 'aria-describedby'?: string }) => (
    <input
      {...props}
      type={type}
      inputMode={type === 'number' ? 'decimal' : undefined}
      step="any"
      value={values[key]}
      aria-invalid={bad.has(field) || undefined}
      onChange={(e) => onChange({ ...values, [key]: e.target.value })}
      required={key === 'name'}
    />
  );
  return (
    <>
      <Field label="Name" hint="Letters, digits, space, dot, dash or underscore.">
        {input('name', 'name', 'text')}
      </Field>
      <Field label="RPO threshold (minutes)" hint="An alert is raised when an item's RPO is above this (0.5 to 1440 minutes). Default 15.">
        {input('rpoMinutes', 'rpoThresholdSeconds', 'number')}
      </Field>
      <Field label="Recovery point retention (hours)" hint="How long recovery points are kept (1 to 720 hours). Default 24.">
        {input('retentionHours', 'retentionHours', 'number')}
      </Field>
      <Field label="App-consistent snapshot frequency (minutes)" hint="0 = off; at most the retention. Default 240.">
        {input('appMinutes', 'appConsistentFrequencyMinutes', 'number')}
      </Field>
      <Field label="Crash-consistent frequency (seconds)" hint="How often a crash-consistent point is cut (1 to 3600 seconds). Default 300.">
        {input('crashSeconds', 'crashConsistentFrequencySeconds', 'number')}
      </Field>
    </>
  );
}

function CreatePolicy({ vaults, onCreated }: { vaults: readonly Vault[]; onCreated(p: ReplicationPolicy): void }) {
  const [vaultId, setVaultId] = useState('');
  const [values, setValues] = useState<PolicyValues>({ name: '', ...DEFAULTS });
  const { busy, error, run } = useAction();
  const chosenVault = vaultId || vaults[0]?.id || '';
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const created = await api.post<ReplicationPolicy>('/api/v1/policies', { vaultId: chosenVault, ...bodyOf(values) });
      setValues({ name: '', ...DEFAULTS });
      onCreated(created);
    });
  };
  if (vaults.length === 0) return <p className="notice">Create a vault first (Infrastructure).</p>;
  return (
    <form onSubmit={submit} noValidate aria-label="Create policy">
      <Field label="Vault">
        {(props) => (
          <select {...props} value={chosenVault} aria-invalid={invalidFields(error).has('vaultId') || undefined} onChange={(e) => setVaultId(e.target.value)}>
            {vaults.map((v) => (
              <option key={v.id} value={v.id}>
                {v.name}
              </option>
            ))}
          </select>
        )}
      </Field>
      <PolicyFields values={values} onChange={setValues} error={error} />
      <ErrorMessage error={error} />
      <button type="submit" className="primary" disabled={busy}>
        {busy ? 'Creating…' : 'Create policy'}
      </button>
    </form>
  );
}

function EditPolicy({ policy, onSaved }: { policy: ReplicationPolicy; onSaved(): void }) {
  const [values, setValues] = useState<PolicyValues>(() => valuesOf(policy));
  const [error, setError] = useState<unknown>(null);
  return (
    <ConfirmAction
      label="Edit"
      title={`Edit policy ${policy.name}`}
      confirmLabel="Save"
      onConfirm={async () => {
        setError(null);
        try {
          await api.patch(`/api/v1/policies/${encodeURIComponent(policy.id)}`, bodyOf(values));
        } catch (err) {
          setError(err);
          throw err;
        }
        onSaved();
      }}
    >
      <PolicyFields values={values} onChange={setValues} error={error} />
    </ConfirmAction>
  );
}

export function Policies() {
  const session = useSession();
  const policies = useAllPages<ReplicationPolicy>('/api/v1/policies', 5000);
  const vaults = useAllPages<Vault>('/api/v1/vaults', 5000);
  const [created, setCreated] = useState<ReplicationPolicy | null>(null);
  const configure = session.can('configure');
  const vaultName = (id: string) => vaults.data?.find((v) => v.id === id)?.name ?? id;
  return (
    <>
      <PageHeader title="Replication policies" />
      <section className="panel" aria-labelledby="policies-list">
        <h2 id="policies-list">Policies</h2>
        <Loaded resource={policies}>
          {(list) =>
            list.length === 0 ? (
              <p className="muted">No replication policy yet.</p>
            ) : (
              <table>
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Vault</th>
                    <th scope="col">RPO threshold</th>
                    <th scope="col">Retention</th>
                    <th scope="col">App-consistent frequency</th>
                    <th scope="col">Crash-consistent frequency</th>
                    {configure ? <th scope="col">Actions</th> : null}
                  </tr>
                </thead>
                <tbody>
                  {[...list]
                    .sort((a, b) => a.name.localeCompare(b.name))
                    .map((p) => (
                      <tr key={p.id}>
                        <th scope="row">{p.name}</th>
                        <td>{vaultName(p.vaultId)}</td>
                        <td>{shortDuration(p.rpoThresholdSeconds)}</td>
                        <td>{p.retentionHours} h</td>
                        <td>{appFrequency(p.appConsistentFrequencyMinutes)}</td>
                        <td>{shortDuration(p.crashConsistentFrequencySeconds)}</td>
                        {configure ? (
                          <td>
                            {/* keyed by the settings, so the dialog opens with the policy as it is now */}
                            <EditPolicy key={JSON.stringify(p)} policy={p} onSaved={policies.reload} />
                          </td>
                        ) : null}
                      </tr>
                    ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
      </section>
      {configure ? (
        <section className="panel" aria-labelledby="policies-create">
          <h2 id="policies-create">Create policy</h2>
          {created ? (
            <p className="notice" role="status">
              Policy {created.name} created.
            </p>
          ) : null}
          <Loaded resource={vaults}>
            {(v) => (
              <CreatePolicy
                vaults={v}
                onCreated={(p) => {
                  setCreated(p);
                  policies.reload();
                }}
              />
            )}
          </Loaded>
        </section>
      ) : null}
    </>
  );
}
