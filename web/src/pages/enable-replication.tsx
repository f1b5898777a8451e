import { useState, type FormEvent, type ReactNode } from 'react';
import { api } from '../api';
import { ErrorMessage, Field, Loaded, PageHeader, formatBytes, useAction } from '../components';
import { invalidFields } from '../forms';
import { useAllPages } from '../paged';
import { Link } from '../router';
import { useSession } from '../session';
import type { ConfigServer, Job, Machine, ProcessServer, PushAccount, ReplicatedItem, ReplicationPolicy, Vault } from '../types';
import { appFrequency, shortDuration } from './policies';
import '../enable-replication.css';

/** Seed step 5, "Enable replication", one screen per choice the operator makes. */
const STEPS = ['Source', 'Machine type', 'Process server', 'Target', 'Storage', 'Network', 'Machines', 'Account', 'Policy', 'Review'] as const;

/** "" = the built-in process server (processServerId left out). */
const BUILT_IN = '';
/** The account choice meaning "I install the agent myself". */
const MANUAL = 'manual';

interface Choices {
  vaultId: string;
  configServerId: string;
  processServerId: string;
  targetPrefix: string;
  size: string;
  networkNow: boolean;
  network: string;
  subnet: string;
  machines: readonly string[];
  account: string;
  policyId: string;
}

const START: Choices = {
  vaultId: '',
  configServerId: '',
  processServerId: BUILT_IN,
  targetPrefix: '',
  size: 'small',
  networkNow: false,
  network: '',
  subnet: '',
  machines: [],
  account: '',
  policyId: '',
};

interface EnableAnswer {
  readonly items: readonly ReplicatedItem[];
  readonly jobs: readonly Job[];
}

/** A labelled text input of a small form. */
function TextField({
  label,
  hint,
  value,
  onChange,
  invalid,
}: {
  label: string;
  hint?: string;
  value: string;
  onChange(value: string): void;
  invalid?: boolean;
}) {
  return (
    <Field label={label} {...(hint ? { hint } : {})}>
      {(props) => <input {...props} value={value} aria-invalid={invalid || undefined} autoComplete="off" onChange={(e) => onChange(e.target.value)} />}
    </Field>
  );
}

/** "Add machine": name, private IP and OS (POST /api/v1/machines runs the supported-OS check). */
function AddMachine({ configServerId, onAdded }: { configServerId: string; onAdded(m: Machine): void }) {
  const empty = { name: '', privateIp: '', os: '' };
  const [values, setValues] = useState(empty);
  const { busy, error, run } = useAction();
  const bad = invalidFields(error);
  const add = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const m = await api.post<Machine>('/api/v1/machines', { configServerId, name: values.name.trim(), privateIp: values.privateIp.trim(), os: values.os.trim() });
      setValues(empty);
      onAdded(m);
    });
  };
  return (
    <form onSubmit={add} noValidate aria-label="Add machine" className="panel">
      <h3>Add machine</h3>
      <TextField label="Machine name" value={values.name} onChange={(v) => setValues({ ...values, name: v })} invalid={bad.has('name')} />
      <TextField label="Private IP" value={values.privateIp} onChange={(v) => setValues({ ...values, privateIp: v })} invalid={bad.has('privateIp')} />
      <TextField label="Operating system" hint="e.g. debian-12, ubuntu-22.04, rhel-9" value={values.os} onChange={(v) => setValues({ ...values, os: v })} invalid={bad.has('os')} />
      <ErrorMessage error={error} />
      <button type="submit" disabled={busy}>
        Add machine
      </button>
    </form>
  );
}

/** "Add account": a push-install account (root over SSH) with a password or a private key, stored sealed by the vault. */
function AddAccount({ configServerId, onAdded }: { configServerId: string; onAdded(a: PushAccount): void }) {
  const empty = { name: '', username: 'root', secret: '' };
  const [values, setValues] = useState(empty);
  const [kind, setKind] = useState<'password' | 'key'>('password');
  const { busy, error, run } = useAction();
  const bad = invalidFields(error);
  const add = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const a = await api.post<PushAccount>('/api/v1/accounts', {
        configServerId,
        name: values.name.trim(),
        username: values.username.trim(),
        ...(kind === 'password' ? { password: values.secret } : { privateKey: values.secret }),
      });
      setValues(empty);
      onAdded(a);
    });
  };
  return (
    <form onSubmit={add} noValidate aria-label="Add account" className="panel">
      <h3>Add account</h3>
      <TextField label="Account name" value={values.name} onChange={(v) => setValues({ ...values, name: v })} invalid={bad.has('name')} />
      <TextField label="User name" value={values.username} onChange={(v) => setValues({ ...values, username: v })} invalid={bad.has('username')} />
      <fieldset>
        <legend>Credential</legend>
        <label className="flow-choice">
          <input type="radio" name="account-kind" checked={kind === 'password'} onChange={() => setKind('password')} /> Password
        </label>{' '}
        <label className="flow-choice">
          <input type="radio" name="account-kind" checked={kind === 'key'} onChange={() => setKind('key')} /> Private key
        </label>
      </fieldset>
      <Field label={kind === 'password' ? 'Account password' : 'Account private key (PEM)'}>
        {(props) =>
          kind === 'password' ? (
            <input
              {...props}
              type="password"
              autoComplete="new-password"
              value={values.secret}
              aria-invalid={bad.has('password') || undefined}
              onChange={(e) => setValues({ ...values, secret: e.target.value })}
            />
          ) : (
            <textarea {...props} rows={5} value={values.secret} aria-invalid={bad.has('privateKey') || undefined} onChange={(e) => setValues({ ...values, secret: e.target.value })} />
          )
        }
      </Field>
      <ErrorMessage error={error} />
      <button type="submit" disabled={busy}>
        Add account
      </button>
    </form>
  );
}

function PolicyFacts({ policy }: { policy: ReplicationPolicy }) {
  return (
    <dl className="facts" aria-label={`Settings of ${policy.name}`}>
      <dt>RPO threshold</dt>
      <dd>{shortDuration(policy.rpoThresholdSeconds)}</dd>
      <dt>Recovery point retention</dt>
      <dd>{policy.retentionHours} h</dd>
      <dt>App-consistent snapshot frequency</dt>
      <dd>{appFrequency(policy.appConsistentFrequencyMinutes)}</dd>
      <dt>Crash-consistent frequency</dt>
      <dd>{shortDuration(policy.crashConsistentFrequencySeconds)}</dd>
    </dl>
  );
}

function Result({ answer, machines }: { answer: EnableAnswer; machines: readonly Machine[] }) {
  const name = (item: ReplicatedItem) => machines.find((m) => m.id === item.machineId)?.name ?? item.compute.targetName;
  return (
    <section className="panel" aria-labelledby="enable-result">
      <h2 id="enable-result">Replication enabled</h2>
      <p role="status">
        {answer.items.length} {answer.items.length === 1 ? 'machine is' : 'machines are'} being protected. Follow each "Enable protection" job; when the agent has
        enrolled and initial replication is done, "Finalize protection" completes it.
      </p>
      <table>
        <caption>Replicated items and their jobs</caption>
        <thead>
          <tr>
            <th scope="col">Machine</th>
            <th scope="col">Item</th>
            <th scope="col">Job</th>
          </tr>
        </thead>
        <tbody>
          {answer.items.map((item) => (
            <tr key={item.id}>
              <th scope="row">{name(item)}</th>
              <td>
                <Link to={`/items/${encodeURIComponent(item.id)}`}>Item {item.id}</Link>
              </td>
              <td>
                {answer.jobs
                  .filter((j) => j.itemId === item.id)
                  .map((j) => (
                    <Link key={j.id} to={`/jobs/${encodeURIComponent(j.id)}`} aria-label={`Enable protection job of ${name(item)}`}>
                      Enable protection ({j.id})
                    </Link>
                  ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function EnableReplication() {
  const session = useSession();
  const [step, setStep] = useState(0);
  const [c, setC] = useState<Choices>(START);
  const [stepError, setStepError] = useState<string | null>(null);
  const { busy, error, run } = useAction();
  const [answer, setAnswer] = useState<EnableAnswer | null>(null);
  const vaults = useAllPages<Vault>('/api/v1/vaults');
  const servers = useAllPages<ConfigServer>('/api/v1/config-servers');
  const processServers = useAllPages<ProcessServer>('/api/v1/process-servers');
  const policies = useAllPages<ReplicationPolicy>('/api/v1/policies');
  const items = useAllPages<ReplicatedItem>('/api/v1/items');
  const cs = c.configServerId ? encodeURIComponent(c.configServerId) : null;
  const machines = useAllPages<Machine>(cs ? `/api/v1/machines?configServerId=${cs}` : null);
  const accounts = useAllPages<PushAccount>(cs ? `/api/v1/accounts?configServerId=${cs}` : null);
  const vault = vaults.data?.find((v) => v.id === c.vaultId);
  const server = servers.data?.find((s) => s.id === c.configServerId);
  const policy = policies.data?.find((p) => p.id === c.policyId);
  const update = (patch: Partial<Choices>) => setC((old) => ({ ...old, ...patch }));
  const protectedMachines = new Set((items.data ?? []).map((i) => i.machineId));
  const targetName = (m: Machine) => `${c.targetPrefix.trim()}${m.name}`;
  const chosen = (machines.data ?? []).filter((m) => c.machines.includes(m.id));
  const bad = invalidFields(error);

  if (!session.can('configure')) {
    return (
      <>
        <PageHeader title="Enable replication" />
        <p className="notice">Your role does not allow enabling replication: it needs the configure permission (owner or contributor).</p>
      </>
    );
  }

  /** What is missing before the operator may leave the current step; null when nothing. */
  const missing = (): string | null => {
    switch (STEPS[step]) {
      case 'Source':
        if (!c.vaultId) return 'Choose a vault.';
        if (!c.configServerId) return 'Choose a configuration server.';
        return null;
      case 'Target':
        return c.size.trim() ? null : 'Give a size for the recovered machines.';
      case 'Network':
        return c.networkNow && !c.network.trim() ? 'Give the network, or choose to configure it later.' : null;
      case 'Machines':
        return c.machines.length === 0 ? 'Select at least one machine.' : null;
      case 'Account':
        return c.account ? null : 'Choose a push-install account, or install the agent yourself.';
      case 'Policy':
        return c.policyId ? null : 'Choose a replication policy.';
      default:
        return null;
    }
  };
  const next = () => {
    const why = missing();
    setStepError(why);
    if (!why) setStep((s) => Math.min(s + 1, STEPS.length - 1));
  };
  const back = () => {
    setStepError(null);
    setStep((s) => Math.max(s - 1, 0));
  };

  const enable = () =>
    run(async () => {
      const compute = chosen.map((m) => ({
        machineId: m.id,
        targetName: targetName(m),
        size: c.size.trim(),
        ...(c.networkNow ? { network: c.network.trim(), ...(c.subnet.trim() ? { subnet: c.subnet.trim() } : {}) } : {}),
      }));
      const body = {
        vaultId: c.vaultId,
        configServerId: c.configServerId,
        policyId: c.policyId,
        machines: chosen.map((m) => m.id),
        compute,
        ...(c.processServerId !== BUILT_IN ? { processServerId: c.processServerId } : {}),
        ...(c.account === MANUAL ? { install: 'manual' } : { install: 'push', accountId: c.account }),
      };
      setAnswer(await api.post<EnableAnswer>('/api/v1/replication/enable', body));
      items.reload();
    });

  if (answer) {
    return (
      <>
        <PageHeader title="Enable replication" />
        <Result answer={answer} machines={machines.data ?? []} />
        <button
          type="button"
          onClick={() => {
            setAnswer(null);
            setC({ ...c, machines: [] });
            setStep(STEPS.indexOf('Machines'));
          }}
        >
          Enable more machines
        </button>
      </>
    );
  }

  let body: ReactNode;
  switch (STEPS[step]) {
    case 'Source':
      body = (
        <>
          <Loaded resource={vaults}>
            {(list) => (
              <Field label="Vault">
                {(props) => (
                  <select {...props} value={c.vaultId} onChange={(e) => update({ vaultId: e.target.value, configServerId: '', policyId: '', machines: [], account: '', processServerId: BUILT_IN })}>
                    <option value="">Choose a vault…</option>
                    {list.map((v) => (
                      <option key={v.id} value={v.id}>
                        {v.name} ({v.location})
                      </option>
                    ))}
                  </select>
                )}
              </Field>
            )}
          </Loaded>
          <Loaded resource={servers}>
            {(list) => {
              const mine = list.filter((s) => s.vaultId === c.vaultId);
              return (
                <Field label="Configuration server" hint="The source: the configuration server that sees the machines to protect.">
                  {(props) => (
                    <select {...props} value={c.configServerId} disabled={!c.vaultId} onChange={(e) => update({ configServerId: e.target.value, machines: [], account: '', processServerId: BUILT_IN })}>
                      <option value="">{c.vaultId && mine.length === 0 ? 'No configuration server registered with this vault' : 'Choose a configuration server…'}</option>
                      {mine.map((s) => (
                        <option key={s.id} value={s.id}>
                          {s.name} ({s.address}, {s.health})
                        </option>
                      ))}
                    </select>
                  )}
                </Field>
              );
            }}
          </Loaded>
        </>
      );
      break;
    case 'Machine type':
      body = (
        <>
          <label className="flow-choice">
            <input type="radio" name="machine-type" checked readOnly /> Physical or virtual machine with the Lifeboat agent
          </label>
          <p className="muted">This is the one kind of machine Lifeboat protects today: any Linux machine, physical or virtual, on which the agent tracks its disks' writes.</p>
        </>
      );
      break;
    case 'Process server':
      body = (
        <Loaded resource={processServers}>
          {(list) => (
            <>
              <label className="flow-choice">
                <input type="radio" name="process-server" checked={c.processServerId === BUILT_IN} onChange={() => update({ processServerId: BUILT_IN })} /> Built-in process server
                of the vault
              </label>
              {list
                .filter((p) => p.configServerId === c.configServerId)
                .map((p) => (
                  <div key={p.id}>
                    <label className="flow-choice">
                      <input type="radio" name="process-server" checked={c.processServerId === p.id} onChange={() => update({ processServerId: p.id })} /> {p.name} ({p.address},{' '}
                      {p.health}, spool {formatBytes(p.spoolUsedBytes)} of {formatBytes(p.spoolLimitBytes)})
                    </label>
                  </div>
                ))}
              <p className="muted">
                The agents send their changes to this process server, which writes them to the vault's store. A registered standalone process server spreads the load;
                the built-in one runs inside the vault.
              </p>
            </>
          )}
        </Loaded>
      );
      break;
    case 'Target':
      body = (
        <>
          <Field label="Name prefix for recovered machines (optional)" hint="A recovered machine is named prefix + the machine's name.">
            {(props) => <input {...props} value={c.targetPrefix} onChange={(e) => update({ targetPrefix: e.target.value })} />}
          </Field>
          <Field label="Size of recovered machines" hint="The compute size, e.g. small, medium, large.">
            {(props) => <input {...props} value={c.size} aria-invalid={bad.has('compute') || undefined} onChange={(e) => update({ size: e.target.value })} />}
          </Field>
        </>
      );
      break;
    case 'Storage':
      body = vault ? (
        <dl className="facts">
          <dt>Vault</dt>
          <dd>{vault.name}</dd>
          <dt>Store</dt>
          <dd>
            <code>{vault.storeUrl}</code>
          </dd>
        </dl>
      ) : (
        <p>Choose a vault first.</p>
      );
      break;
    case 'Network':
      body = (
        <>
          <label className="flow-choice">
            <input type="radio" name="network-when" checked={!c.networkNow} onChange={() => update({ networkNow: false })} /> Configure later
          </label>{' '}
          <label className="flow-choice">
            <input type="radio" name="network-when" checked={c.networkNow} onChange={() => update({ networkNow: true })} /> Configure now for the selected machines
          </label>
          {c.networkNow ? (
            <>
              <Field label="Network">{(props) => <input {...props} value={c.network} onChange={(e) => update({ network: e.target.value })} />}</Field>
              <Field label="Subnet (optional)">{(props) => <input {...props} value={c.subnet} onChange={(e) => update({ subnet: e.target.value })} />}</Field>
            </>
          ) : (
            <p className="muted">Each item's network can be set later on its page (compute and network settings).</p>
          )}
        </>
      );
      break;
    case 'Machines':
      body = (
        <>
          <Loaded resource={machines}>
            {(list) =>
              list.length === 0 ? (
                <p className="muted">The configuration server has found no machine yet: add one below, or refresh the server (Infrastructure).</p>
              ) : (
                <table>
                  <caption>Machines of {server?.name ?? 'the configuration server'}</caption>
                  <thead>
                    <tr>
                      <th scope="col">Select</th>
                      <th scope="col">Name</th>
                      <th scope="col">IP</th>
                      <th scope="col">OS</th>
                      <th scope="col">Supported</th>
                    </tr>
                  </thead>
                  <tbody>
                    {list.map((m) => {
                      const already = protectedMachines.has(m.id);
                      const unsupported = m.supported === false;
                      return (
                        <tr key={m.id}>
                          <td>
                            <input
                              type="checkbox"
                              aria-label={`Select ${m.name}`}
                              disabled={unsupported || already}
                              checked={c.machines.includes(m.id)}
                              aria-invalid={bad.has('machines') || undefined}
                              onChange={(e) => update({ machines: e.target.checked ? [...c.machines, m.id] : c.machines.filter((id) => id !== m.id) })}
                            />
                          </td>
                          <th scope="row">{m.name}</th>
                          <td>{m.privateIp}</td>
                          <td>
                            {m.os}
                            {m.kernel ? <span className="muted"> ({m.kernel})</span> : null}
                          </td>
                          <td>
                            {already
                              ? 'already protected'
                              : unsupported
                                ? `no: ${m.supportReason ?? 'not supported'}`
                                : m.supported === null
                                  ? 'not checked yet'
                                  : 'yes'}
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              )
            }
          </Loaded>
        </>
      );
      break;
    case 'Account':
      body = (
        <Loaded resource={accounts}>
          {(list) => (
            <>
              {list.map((a) => (
                <div key={a.id}>
                  <label className="flow-choice">
                    <input type="radio" name="account" checked={c.account === a.id} onChange={() => update({ account: a.id })} /> {a.name} ({a.username}, {a.kind})
                  </label>
                </div>
              ))}
              <div>
                <label className="flow-choice">
                  <input type="radio" name="account" checked={c.account === MANUAL} onChange={() => update({ account: MANUAL })} /> I install the agent myself (manual)
                </label>
              </div>
              <p className="muted">
                With an account, the vault installs the mobility agent over SSH (push install). With a manual install, the "Enable protection" job writes the agent's
                settings and waits for you to install it and enroll it.
              </p>
            </>
          )}
        </Loaded>
      );
      break;
    case 'Policy':
      body = (
        <Loaded resource={policies}>
          {(list) => {
            const mine = list.filter((p) => p.vaultId === c.vaultId);
            return (
              <>
                <Field label="Replication policy">
                  {(props) => (
                    <select {...props} value={c.policyId} aria-invalid={bad.has('policyId') || undefined} onChange={(e) => update({ policyId: e.target.value })}>
                      <option value="">{mine.length === 0 ? 'No policy in this vault: create one (Policies)' : 'Choose a policy…'}</option>
                      {mine.map((p) => (
                        <option key={p.id} value={p.id}>
                          {p.name}
                        </option>
                      ))}
                    </select>
                  )}
                </Field>
                {policy ? <PolicyFacts policy={policy} /> : null}
              </>
            );
          }}
        </Loaded>
      );
      break;
    case 'Review':
      body = (
        <>
          <dl className="facts" aria-label="Review">
            <dt>Source</dt>
            <dd>
              {vault?.name} / {server?.name}
            </dd>
            <dt>Machine type</dt>
            <dd>Physical or virtual machine with the agent</dd>
            <dt>Process server</dt>
            <dd>{c.processServerId === BUILT_IN ? 'Built-in' : (processServers.data?.find((p) => p.id === c.processServerId)?.name ?? c.processServerId)}</dd>
            <dt>Target</dt>
            <dd>
              {chosen.map(targetName).join(', ')} ({c.size})
            </dd>
            <dt>Storage</dt>
            <dd>{vault?.storeUrl}</dd>
            <dt>Network</dt>
            <dd>{c.networkNow ? `${c.network}${c.subnet ? ` / ${c.subnet}` : ''}` : 'configure later'}</dd>
            <dt>Machines</dt>
            <dd>{chosen.map((m) => `${m.name} (${m.privateIp})`).join(', ')}</dd>
            <dt>Account</dt>
            <dd>{c.account === MANUAL ? 'manual install' : (accounts.data?.find((a) => a.id === c.account)?.name ?? c.account)}</dd>
            <dt>Policy</dt>
            <dd>{policy?.name}</dd>
          </dl>
          <ErrorMessage error={error} />
          <button type="button" className="primary" disabled={busy} onClick={() => void enable()}>
            {busy ? 'Enabling…' : 'Enable replication'}
          </button>
        </>
      );
      break;
  }

  return (
    <>
      <PageHeader title="Enable replication" />
      <ol className="flow-steps" aria-label="Steps">
        {STEPS.map((s, i) => (
          <li key={s} className={i < step ? 'done' : undefined} aria-current={i === step ? 'step' : undefined}>
            {i === step ? <strong>{`${i + 1} ${s}`}</strong> : `${i + 1} ${s}`}
          </li>
        ))}
      </ol>
      <fieldset className="panel">
        <legend>{`Step ${step + 1} of ${STEPS.length}: ${STEPS[step]}`}</legend>
        {body}
      </fieldset>
      {STEPS[step] === 'Machines' && c.configServerId ? (
        <AddMachine
          configServerId={c.configServerId}
          onAdded={(m) => {
            machines.reload();
            if (m.supported !== false) setC((old) => ({ ...old, machines: [...old.machines, m.id] }));
          }}
        />
      ) : null}
      {STEPS[step] === 'Account' && c.configServerId ? (
        <AddAccount
          configServerId={c.configServerId}
          onAdded={(a) => {
            accounts.reload();
            update({ account: a.id });
          }}
        />
      ) : null}
      {stepError ? (
        <p className="error" role="alert">
          {stepError}
        </p>
      ) : null}
      <div className="dialog-actions">
        <button type="button" onClick={back} disabled={step === 0}>
          Back
        </button>
        {step < STEPS.length - 1 ? (
          <button type="button" className="primary" onClick={next}>
            Next
          </button>
        ) : null}
      </div>
    </>
  );
}
