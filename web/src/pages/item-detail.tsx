import { Fragment, useState, type FormEvent } from 'react';
import { api, ApiError, readableError } from '../api';
import { Badge, ErrorMessage, type Resource, Field, formatAge, formatBytes, formatDuration, formatTime, Loaded, PageHeader, ProgressBar, useAction, useResource } from '../components';
import { itemHealth } from '../health';
import { jobKindWords } from '../job-words';
import { ItemActions } from '../item-actions';
import { useAllPages, useNewest } from '../paged';
import { diskName, shortId } from '../point-picker';
import { Link } from '../router';
import { RpoChart } from '../rpo-chart';
import { useSession } from '../session';
import type { Agent, Alert, ConfigServer, DrillReport, ItemPoint, ItemPoints, Job, Machine, ProcessServer, ReplicatedItem, ReplicationPolicy, RpoHistory } from '../types';
import '../items.css';

/**
 * One replicated item: its machine and agent, recovery points, disks, failover target
 * settings, RPO over time, drill reports, recent jobs, and the recovery actions its
 * state allows (docs/recovery.md). Everything refreshes on its own.
 */
export function ItemDetail({ id }: { id: string }) {
  const base = `/api/v1/items/${encodeURIComponent(id)}`;
  const session = useSession();
  const item = useResource<ReplicatedItem>(base, 5000);
  const machine = useResource<Machine>(item.data ? `/api/v1/machines/${item.data.machineId}` : null);
  const policy = useResource<ReplicationPolicy>(item.data ? `/api/v1/policies/${item.data.policyId}` : null, 30_000);
  const alerts = useAllPages<Alert>('/api/v1/alerts', 5000);
  const points = useResource<ItemPoints>(`${base}/points?limit=100`, 10_000);
  const reports = useResource<{ items: readonly DrillReport[] }>(`${base}/drill-reports`, 5000);
  const jobs = useNewest<Job>(`/api/v1/jobs?itemId=${encodeURIComponent(id)}`, 10, 5000);
  const refresh = () => {
    item.reload();
    jobs.reload();
    reports.reload();
    points.reload();
  };
  const name = machine.data?.name ?? item.data?.compute.targetName ?? id;
  return (
    <>
      <PageHeader title={item.data ? name : 'Replicated item'} />
      <p>
        <Link to="/items">All replicated items</Link>
      </p>
      <Loaded resource={item}>
        {(it) => {
          const verdict = itemHealth(it, policy.data, alerts.data ?? []);
          return (
            <>
              <section className="panel" aria-label="Status">
                <dl className="facts">
                  <dt>State</dt>
                  <dd>
                    <Badge value={it.state} />
                    {it.state === 'initial-replication' ? <ProgressBar percent={it.initialReplicationPercent} label="Initial replication" /> : null}
                  </dd>
                  <dt>Health</dt>
                  <dd>
                    <Badge value={verdict.health} /> {verdict.reason}
                  </dd>
                  <dt>RPO</dt>
                  <dd>
                    {it.rpoSeconds === null ? 'no recovery point yet' : formatDuration(it.rpoSeconds)}
                    {policy.data ? ` (threshold ${formatDuration(policy.data.rpoThresholdSeconds)})` : null}
                  </dd>
                </dl>
              </section>
              {session.can('operate') ? (
                <ItemActions item={it} points={points.data?.items} pointsUnavailable={points.error ? readableError(points.error) : undefined} onChanged={refresh} />
              ) : null}
              <div className="item-sections">
                <MachineSection item={it} machine={machine.data} machineError={machine.error} policy={policy.data} />
                <PointsSection points={points} />
                <DisksSection item={it} />
                <ComputeSection item={it} canEdit={session.can('configure')} onSaved={item.reload} />
              </div>
              <RpoSection base={base} />
              <DrillReportsSection reports={reports} />
              <JobsSection jobs={jobs} />
            </>
          );
        }}
      </Loaded>
    </>
  );
}

function MachineSection({ item, machine, machineError, policy }: { item: ReplicatedItem; machine: Machine | undefined; machineError: unknown; policy: ReplicationPolicy | undefined }) {
  const configServer = useResource<ConfigServer>(machine ? `/api/v1/config-servers/${machine.configServerId}` : null, 30_000);
  const processServers = useAllPages<ProcessServer>(item.processServerId ? '/api/v1/process-servers' : null, 30_000);
  const processServer = processServers.data?.find((p) => p.id === item.processServerId);
  return (
    <section className="panel" aria-labelledby="item-machine">
      <h2 id="item-machine">Machine</h2>
      <ErrorMessage error={machineError} />
      <dl className="facts">
        <dt>Name</dt>
        <dd>{machine?.name ?? '—'}</dd>
        <dt>IP</dt>
        <dd>{machine?.privateIp ?? '—'}</dd>
        <dt>OS</dt>
        <dd>{machine?.os ?? '—'}</dd>
        <dt>Kernel</dt>
        <dd>{machine?.kernel ?? '—'}</dd>
        <dt>Configuration server</dt>
        <dd>{configServer.data ? `${configServer.data.name} (${configServer.data.health})` : '—'}</dd>
        <dt>Process server</dt>
        <dd>{item.processServerId === null ? 'none' : processServer ? `${processServer.name} (${processServer.health})` : item.processServerId}</dd>
        <dt>Generation</dt>
        <dd>{item.generation}</dd>
        <dt>Policy</dt>
        <dd>
          <Link to="/policies">{policy?.name ?? item.policyId}</Link>
        </dd>
      </dl>
      <AgentFacts itemId={item.id} />
    </section>
  );
}

function AgentFacts({ itemId }: { itemId: string }) {
  const agent = useResource<Agent>(`/api/v1/items/${encodeURIComponent(itemId)}/agent`, 5000);
  if (agent.data === undefined && agent.error instanceof ApiError && agent.error.status === 404) {
    return <p className="muted">No agent has enrolled for this machine yet.</p>;
  }
  return (
    <>
      <h3>Agent</h3>
      <Loaded resource={agent}>
        {(a) => (
          <>
            <dl className="facts">
              <dt>Hostname</dt>
              <dd>{a.hostname}</dd>
              <dt>Version</dt>
              <dd>{a.version ?? 'unknown'}</dd>
              <dt>Last heartbeat</dt>
              <dd>{formatAge(a.lastHeartbeatAt)}</dd>
            </dl>
            {a.disks.length > 0 ? (
              <table>
                <caption>Agent disks</caption>
                <thead>
                  <tr>
                    <th scope="col">Disk</th>
                    <th scope="col">State</th>
                    <th scope="col">Initial copy</th>
                    <th scope="col">Lag</th>
                    <th scope="col">Last error</th>
                  </tr>
                </thead>
                <tbody>
                  {a.disks.map((d) => (
                    <tr key={d.name}>
                      <th scope="row">{d.name}</th>
                      <td>
                        <Badge value={d.state} />
                      </td>
                      <td>{Math.round(d.initialPercent)} %</td>
                      <td>{formatDuration(d.lagMs / 1000)}</td>
                      <td>{d.lastError ?? '—'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : null}
          </>
        )}
      </Loaded>
    </>
  );
}

function PointsSection({ points }: { points: Resource<ItemPoints> }) {
  return (
    <section className="panel" aria-labelledby="item-points">
      <h2 id="item-points">Recovery points</h2>
      <Loaded resource={points}>
        {(p) =>
          p.items.length === 0 ? (
            <p>No recovery point yet.</p>
          ) : (
            <>
              <LatestTable caption="Latest processed" points={p.latestProcessed} />
              <LatestTable caption="Latest app-consistent" points={p.latestAppConsistent} />
              <table>
                <caption>Recent points</caption>
                <thead>
                  <tr>
                    <th scope="col">Point</th>
                    <th scope="col">Disk</th>
                    <th scope="col">Captured</th>
                    <th scope="col">Consistency</th>
                  </tr>
                </thead>
                <tbody>
                  {p.items.slice(0, 20).map((pt) => (
                    <tr key={`${pt.disk}/${pt.pointId}`}>
                      <td>
                        <code title={pt.pointId}>{shortId(pt.pointId)}</code>
                      </td>
                      <td>{diskName(pt.disk)}</td>
                      <td>{formatTime(pt.capturedAt)}</td>
                      <td>{pt.consistency === 'app' ? 'app-consistent' : 'crash-consistent'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )
        }
      </Loaded>
    </section>
  );
}

function LatestTable({ caption, points }: { caption: string; points: readonly ItemPoint[] }) {
  if (points.length === 0) return <p>{caption}: none.</p>;
  return (
    <table>
      <caption>{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Disk</th>
          <th scope="col">Captured</th>
          <th scope="col">Age</th>
        </tr>
      </thead>
      <tbody>
        {points.map((pt) => (
          <tr key={pt.disk}>
            <th scope="row">{diskName(pt.disk)}</th>
            <td>{formatTime(pt.capturedAt)}</td>
            <td>{formatAge(pt.capturedAt)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function DisksSection({ item }: { item: ReplicatedItem }) {
  return (
    <section className="panel" aria-labelledby="item-disks">
      <h2 id="item-disks">Disks</h2>
      {item.disks.length === 0 ? (
        <p>No disk is known yet: the agent reports them when it enrolls.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Disk</th>
              <th scope="col">Size</th>
            </tr>
          </thead>
          <tbody>
            {item.disks.map((d) => (
              <tr key={d.name}>
                <th scope="row">{d.name}</th>
                <td>{formatBytes(d.sizeBytes)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

const COMPUTE_FIELDS = [
  { key: 'targetName', label: 'Target name', hint: 'The name of the machine after failover.' },
  { key: 'size', label: 'Size', hint: 'The machine size of the compute driver.' },
  { key: 'network', label: 'Network', hint: 'Empty: the default network.' },
  { key: 'subnet', label: 'Subnet', hint: 'Empty: none.' },
  { key: 'ip', label: 'IP address', hint: 'Empty: assigned by the network.' },
] as const;

type ComputeKey = (typeof COMPUTE_FIELDS)[number]['key'];

/** The failover target: read by everyone, edited (PATCH /items/:id/compute, the fields that changed) with `configure`. */
function ComputeSection({ item, canEdit, onSaved }: { item: ReplicatedItem; canEdit: boolean; onSaved(): void }) {
  const current = (k: ComputeKey) => item.compute[k] ?? '';
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState<Record<ComputeKey, string>>({ targetName: '', size: '', network: '', subnet: '', ip: '' });
  const { busy, error, setError, run } = useAction();
  const [saved, setSaved] = useState(false);
  const edit = () => {
    setDraft({ targetName: current('targetName'), size: current('size'), network: current('network'), subnet: current('subnet'), ip: current('ip') });
    setError(null);
    setSaved(false);
    setEditing(true);
  };
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const patch: Record<string, string | null> = {};
    for (const { key } of COMPUTE_FIELDS) {
      const v = draft[key].trim();
      if (v === current(key)) continue;
      // Network, subnet and IP may be cleared; the name and size may not (the vault says so).
      patch[key] = v === '' && key !== 'targetName' && key !== 'size' ? null : v;
    }
    if (Object.keys(patch).length === 0) {
      setEditing(false);
      return;
    }
    await run(async () => {
      await api.patch<ReplicatedItem>(`/api/v1/items/${encodeURIComponent(item.id)}/compute`, patch);
      setEditing(false);
      setSaved(true);
      onSaved();
    });
  };
  return (
    <section className="panel" aria-labelledby="item-compute">
      <h2 id="item-compute">Compute and network</h2>
      {saved ? (
        <p className="notice" role="status">
          Compute settings saved.
        </p>
      ) : null}
      {editing ? (
        <form onSubmit={submit} aria-labelledby="item-compute">
          <div className="compute-form">
            {COMPUTE_FIELDS.map((f) => (
              <Field key={f.key} label={f.label} hint={f.hint}>
                {(props) => <input {...props} value={draft[f.key]} onChange={(e) => setDraft({ ...draft, [f.key]: e.target.value })} />}
              </Field>
            ))}
          </div>
          <ErrorMessage error={error} />
          <div className="dialog-actions">
            <button type="submit" className="primary" disabled={busy}>
              {busy ? 'Saving…' : 'Save compute settings'}
            </button>
            <button type="button" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </div>
        </form>
      ) : (
        <>
          <dl className="facts">
            {COMPUTE_FIELDS.map((f) => (
              <Fragment key={f.key}>
                <dt>{f.label}</dt>
                <dd>{item.compute[f.key] ?? '—'}</dd>
              </Fragment>
            ))}
          </dl>
          {canEdit ? (
            <button type="button" onClick={edit}>
              Edit compute settings
            </button>
          ) : null}
        </>
      )}
    </section>
  );
}

const RANGES = [
  { hours: 1, label: '1 h' },
  { hours: 24, label: '24 h' },
  { hours: 168, label: '7 d' },
] as const;

function RpoSection({ base }: { base: string }) {
  const [hours, setHours] = useState<number>(24);
  const history = useResource<RpoHistory>(`${base}/rpo-history?hours=${hours}`, 30_000);
  return (
    <section className="panel" aria-labelledby="item-rpo">
      <h2 id="item-rpo">RPO over time</h2>
      <fieldset className="range-choice">
        <legend>Period</legend>
        {RANGES.map((r) => (
          <label key={r.hours}>
            <input type="radio" name="rpo-range" checked={hours === r.hours} onChange={() => setHours(r.hours)} /> {r.label}
          </label>
        ))}
      </fieldset>
      <Loaded resource={history}>{(h) => <RpoChart history={h} hours={hours} />}</Loaded>
    </section>
  );
}

function DrillReportsSection({ reports }: { reports: Resource<{ items: readonly DrillReport[] }> }) {
  return (
    <section className="panel" aria-labelledby="item-drills">
      <h2 id="item-drills">Drill reports</h2>
      <Loaded resource={reports}>
        {(r) =>
          r.items.length === 0 ? (
            <p>No drill yet. A test failover writes one.</p>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Started</th>
                  <th scope="col">Operation</th>
                  <th scope="col">Outcome</th>
                  <th scope="col">Point</th>
                  <th scope="col">RPO</th>
                  <th scope="col">RTO</th>
                  <th scope="col">Driver</th>
                  <th scope="col">Network</th>
                  <th scope="col">Notes</th>
                </tr>
              </thead>
              <tbody>
                {r.items.map((d) => (
                  <tr key={d.id}>
                    <td>
                      <Link to={`/jobs/${d.jobId}`}>{formatTime(d.startedAt)}</Link>
                    </td>
                    <td>{d.operation}</td>
                    <td>
                      <Badge value={d.outcome} />
                      {d.error ? <span className="muted health-reason">{d.error}</span> : null}
                    </td>
                    <td>{d.point ? d.point.disks.map((p) => `${diskName(p.disk)}: ${formatTime(p.capturedAt)} (${p.consistency})`).join('; ') : '—'}</td>
                    <td>{formatDuration(d.rpoSeconds)}</td>
                    <td>{formatDuration(d.rtoSeconds)}</td>
                    <td>
                      {d.driver}
                      {d.accel ? ` (${d.accel})` : ''}
                    </td>
                    <td>{d.network}</td>
                    <td>
                      {d.notes ?? '—'}
                      {d.consoleLog ? (
                        <details>
                          <summary>Console tail</summary>
                          <pre>{d.consoleLog}</pre>
                        </details>
                      ) : null}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </section>
  );
}

function JobsSection({ jobs }: { jobs: Resource<readonly Job[]> }) {
  return (
    <section className="panel" aria-labelledby="item-jobs">
      <h2 id="item-jobs">Recent jobs</h2>
      <Loaded resource={jobs}>
        {(all) =>
          all.length === 0 ? (
            <p>No job yet.</p>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Job</th>
                  <th scope="col">State</th>
                  <th scope="col">Created</th>
                  <th scope="col">Ended</th>
                </tr>
              </thead>
              <tbody>
                {/* the vault answers them newest first, ten at most */}
                {all.map((j) => (
                    <tr key={j.id}>
                      <td>
                        <Link to={`/jobs/${j.id}`}>{jobKindWords(j.kind)}</Link>
                      </td>
                      <td>
                        <Badge value={j.state} />
                        {j.error ? <span className="muted health-reason">{j.error}</span> : null}
                      </td>
                      <td>{formatTime(j.createdAt)}</td>
                      <td>{formatTime(j.endedAt)}</td>
                    </tr>
                  ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </section>
  );
}
