import { Badge, ErrorMessage, Loaded, PageHeader, ProgressBar, formatAge, formatDuration, formatTime, useResource } from '../components';
import { jobKindWords, jobPercent } from '../job-words';
import { itemHealth, type Health, type HealthVerdict } from '../health';
import { newestFirst, useAllPages, useNewest } from '../paged';
import { Link } from '../router';
import { shortDuration } from './policies';
import type { Alert, DrillReport, DrillSummary, Job, Machine, ReplicatedItem, ReplicationPolicy } from '../types';

const REFRESH_MS = 5000;
/** A protected item whose last passed drill is older than this (or that never passed one) should be tested. */
const DRILL_DUE_MS = 30 * 24 * 3600 * 1000;
const TOP = 10;

function HealthCards({ verdicts, initial }: { verdicts: readonly Health[]; initial: readonly ReplicatedItem[] }) {
  const count = (h: Health) => verdicts.filter((v) => v === h).length;
  return (
    <div className="cards" role="group" aria-label="Replicated items by health">
      {(['healthy', 'warning', 'critical'] as const).map((h) => (
        <div key={h} className="card">
          <span className="number">{count(h)}</span> <Badge value={h} />
        </div>
      ))}
      <div className="card">
        <span className="number">{initial.length}</span> <Badge value="initial-replication" />
        {initial.length > 0 ? (
          <span className="muted"> lowest {Math.min(...initial.map((i) => i.initialReplicationPercent))} %</span>
        ) : null}
      </div>
    </div>
  );
}

function RpoCell({ item, policy }: { item: ReplicatedItem; policy: ReplicationPolicy | undefined }) {
  if (item.state === 'initial-replication') return <ProgressBar percent={item.initialReplicationPercent} label={`Initial replication of ${item.compute.targetName}`} />;
  if (item.rpoSeconds === null) return <span className="muted">no recovery point yet</span>;
  if (!policy) return <>{formatDuration(item.rpoSeconds)}</>;
  return (
    <>
      <span>
        {shortDuration(item.rpoSeconds)} / {shortDuration(policy.rpoThresholdSeconds)}
      </span>
      <ProgressBar percent={(100 * item.rpoSeconds) / policy.rpoThresholdSeconds} label={`RPO against its threshold`} />
    </>
  );
}

function LatestDrill({ summary }: { summary: DrillSummary | undefined }) {
  if (!summary) return <span className="muted">…</span>;
  const last = summary.latest;
  if (!last) return <span className="muted">never</span>;
  return (
    <>
      <Badge value={last.outcome} /> {formatAge(last.startedAt)}
    </>
  );
}

/** Protected items that never passed a drill, or whose last passed drill is older than 30 days. */
function testRecommended(items: readonly ReplicatedItem[], drills: ReadonlyMap<string, DrillSummary>, now: number) {
  const out: { item: ReplicatedItem; lastPassed: DrillReport | undefined }[] = [];
  for (const item of items) {
    if (item.state !== 'protected') continue;
    const mine = drills.get(item.id);
    if (!mine) continue; // not loaded yet: say nothing rather than something wrong
    const lastPassed = mine.lastPassed ?? undefined;
    if (!lastPassed || now - new Date(lastPassed.startedAt).getTime() > DRILL_DUE_MS) out.push({ item, lastPassed });
  }
  return out;
}

export function Overview() {
  const items = useAllPages<ReplicatedItem>('/api/v1/items', REFRESH_MS);
  const policies = useAllPages<ReplicationPolicy>('/api/v1/policies', REFRESH_MS);
  const machines = useAllPages<Machine>('/api/v1/machines', REFRESH_MS);
  const alerts = useAllPages<Alert>('/api/v1/alerts?status=open', REFRESH_MS);
  const jobs = useNewest<Job>('/api/v1/jobs', TOP, REFRESH_MS);
  const summary = useResource<{ items: readonly DrillSummary[] }>('/api/v1/drill-summary', REFRESH_MS);
  const drills = new Map((summary.data?.items ?? []).map((d) => [d.itemId, d]));
  const openAlerts = alerts.data ?? [];
  const policyOf = (i: ReplicatedItem) => policies.data?.find((p) => p.id === i.policyId);
  const machineName = (i: ReplicatedItem) => machines.data?.find((m) => m.id === i.machineId)?.name ?? i.compute.targetName;
  const updated = [items, policies, machines, alerts, jobs].map((r) => r.updatedAt?.getTime() ?? 0);
  const updatedAt = Math.min(...updated);
  return (
    <>
      <PageHeader title="Overview">
        <span className="muted" aria-live="off">
          {updatedAt > 0 ? `updated ${new Date(updatedAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false })}` : 'loading…'}
        </span>
      </PageHeader>
      <ErrorMessage error={policies.error ?? machines.error ?? alerts.error ?? summary.error} />
      <section className="panel" aria-labelledby="overview-items">
        <h2 id="overview-items">Replicated items</h2>
        <Loaded resource={items}>
          {(list) => {
            const verdicts = new Map<string, HealthVerdict>(list.map((i) => [i.id, itemHealth(i, policyOf(i), openAlerts)]));
            const sorted = [...list].sort((a, b) => machineName(a).localeCompare(machineName(b)));
            return (
              <>
                <HealthCards verdicts={[...verdicts.values()].map((v) => v.health)} initial={list.filter((i) => i.state === 'initial-replication')} />
                {list.length === 0 ? (
                  <p className="muted">
                    No replicated item yet. <Link to="/enable-replication">Enable replication</Link> for a machine.
                  </p>
                ) : (
                  <table>
                    <caption>Replicated items</caption>
                    <thead>
                      <tr>
                        <th scope="col">Name</th>
                        <th scope="col">State</th>
                        <th scope="col">Health</th>
                        <th scope="col">RPO / threshold</th>
                        <th scope="col">Latest drill</th>
                      </tr>
                    </thead>
                    <tbody>
                      {sorted.map((i) => {
                        const v = verdicts.get(i.id)!;
                        return (
                          <tr key={i.id}>
                            <th scope="row">
                              <Link to={`/items/${encodeURIComponent(i.id)}`}>{machineName(i)}</Link>
                            </th>
                            <td>
                              <Badge value={i.state} />
                              {i.state === 'initial-replication' ? <span> initial replication {i.initialReplicationPercent} %</span> : null}
                            </td>
                            <td>
                              <Badge value={v.health} /> <span className="muted">{v.reason}</span>
                            </td>
                            <td>
                              <RpoCell item={i} policy={policyOf(i)} />
                            </td>
                            <td>
                              <LatestDrill summary={drills.get(i.id)} />
                            </td>
                          </tr>
                        );
                      })}
                    </tbody>
                  </table>
                )}
              </>
            );
          }}
        </Loaded>
      </section>
      <section className="panel" aria-labelledby="overview-test">
        <h2 id="overview-test">Test recommended</h2>
        <Loaded resource={items}>
          {(list) => {
            const due = testRecommended(list, drills, Date.now());
            return due.length === 0 ? (
              <p className="muted">Every protected item passed a drill in the last 30 days.</p>
            ) : (
              <ul aria-label="Items to test">
                {due.map(({ item, lastPassed }) => (
                  <li key={item.id}>
                    <Link to={`/items/${encodeURIComponent(item.id)}`}>{machineName(item)}</Link>{' '}
                    <span className="muted">{lastPassed ? `last passed drill ${formatAge(lastPassed.startedAt)}` : 'never passed a drill'}</span>
                  </li>
                ))}
              </ul>
            );
          }}
        </Loaded>
      </section>
      <section className="panel" aria-labelledby="overview-alerts">
        <h2 id="overview-alerts">Open alerts</h2>
        <Loaded resource={alerts}>
          {(list) =>
            list.length === 0 ? (
              <p className="muted">No open alert.</p>
            ) : (
              <>
                <table>
                  <caption>Newest open alerts</caption>
                  <thead>
                    <tr>
                      <th scope="col">Raised</th>
                      <th scope="col">Severity</th>
                      <th scope="col">Message</th>
                    </tr>
                  </thead>
                  <tbody>
                    {newestFirst(list, (a) => a.raisedAt)
                      .slice(0, TOP)
                      .map((a) => (
                        <tr key={a.id}>
                          <td>{formatTime(a.raisedAt)}</td>
                          <td>
                            <Badge value={a.severity} />
                          </td>
                          <td>{a.message}</td>
                        </tr>
                      ))}
                  </tbody>
                </table>
                <p>
                  <Link to="/alerts">All alerts ({list.length} open)</Link>
                </p>
              </>
            )
          }
        </Loaded>
      </section>
      <section className="panel" aria-labelledby="overview-jobs">
        <h2 id="overview-jobs">Recent jobs</h2>
        <Loaded resource={jobs}>
          {(list) =>
            list.length === 0 ? (
              <p className="muted">No job yet.</p>
            ) : (
              <>
                <table>
                  <caption>Newest jobs</caption>
                  <thead>
                    <tr>
                      <th scope="col">Job</th>
                      <th scope="col">Item</th>
                      <th scope="col">State</th>
                      <th scope="col">Progress</th>
                      <th scope="col">Created</th>
                    </tr>
                  </thead>
                  <tbody>
                    {/* the vault answers them newest first, TOP at most */}
                    {list.map((j) => {
                        const item = items.data?.find((i) => i.id === j.itemId);
                        return (
                          <tr key={j.id}>
                            <th scope="row">
                              <Link to={`/jobs/${encodeURIComponent(j.id)}`}>{jobKindWords(j.kind)}</Link>
                            </th>
                            <td>{item ? machineName(item) : '—'}</td>
                            <td>
                              <Badge value={j.state} />
                            </td>
                            <td>
                              <ProgressBar percent={jobPercent(j)} label={`Progress of ${jobKindWords(j.kind)}`} />
                            </td>
                            <td>{formatAge(j.createdAt)}</td>
                          </tr>
                        );
                      })}
                  </tbody>
                </table>
                <p>
                  <Link to="/jobs">All jobs</Link>
                </p>
              </>
            )
          }
        </Loaded>
      </section>
    </>
  );
}
