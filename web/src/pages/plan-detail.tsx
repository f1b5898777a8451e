import { useState, type FormEvent } from 'react';
import { api } from '../api';
import { ConfirmAction, ErrorMessage, Field, Loaded, PageHeader, formatTime, useResource } from '../components';
import { useItemNames, type ItemNames } from '../item-names';
import { useAllPages } from '../paged';
import { PlanForm, type PlanBody } from '../plan-form';
import { Link, navigate } from '../router';
import { useSession } from '../session';
import type { DrillSettings, Job, PointChoice, RecoveryPlan, Vault } from '../types';
import { LastDrill } from './plans';
import '../plans.css';

const REFRESH_MS = 5000;

/** An operation of the plan just started, and its job (always a `recovery-plan` job). */
interface Started {
  readonly operation: string;
  readonly job: Job;
}

/** One recovery plan: its groups in order, edit and delete (configure), its operations (operate) and its drill schedule. */
export function PlanDetail({ id }: { id: string }) {
  const session = useSession();
  const path = `/api/v1/plans/${encodeURIComponent(id)}`;
  const plan = useResource<RecoveryPlan>(path, REFRESH_MS);
  const vaults = useAllPages<Vault>('/api/v1/vaults');
  const names = useItemNames(REFRESH_MS * 3);
  const [editing, setEditing] = useState(false);
  const [started, setStarted] = useState<Started | null>(null);
  const save = async (body: PlanBody) => {
    await api.patch<RecoveryPlan>(path, body);
    setEditing(false);
    plan.reload();
  };
  return (
    <>
      <PageHeader title={plan.data ? plan.data.name : 'Recovery plan'}>
        {plan.data && session.can('configure') && !editing ? (
          <>
            <button type="button" onClick={() => setEditing(true)}>
              Edit plan
            </button>
            <ConfirmAction
              label="Delete plan"
              title={`Delete the recovery plan ${plan.data.name}`}
              confirmLabel="Delete plan"
              danger
              onConfirm={async () => {
                await api.del(path);
                navigate('/plans');
              }}
            >
              <p>The plan, its drill schedule and its drill alert go. Its items and their drill reports stay. Refused while a job of the plan runs.</p>
            </ConfirmAction>
          </>
        ) : null}
      </PageHeader>
      <Loaded resource={plan}>
        {(p) =>
          editing ? (
            <PlanForm plan={p} vaults={vaults.data ?? []} names={names} submitLabel="Save plan" onSubmit={save} onCancel={() => setEditing(false)} />
          ) : (
            <>
              <section className="panel plan-panel" aria-label="Plan">
                {p.description ? <p>{p.description}</p> : null}
                <dl className="facts">
                  <dt>Vault</dt>
                  <dd>{vaults.data?.find((v) => v.id === p.vaultId)?.name ?? p.vaultId}</dd>
                  <dt>Last drill</dt>
                  <dd>
                    <LastDrill plan={p} />
                  </dd>
                  <dt>Created</dt>
                  <dd>{formatTime(p.createdAt)}</dd>
                  <dt>Changed</dt>
                  <dd>{formatTime(p.updatedAt)}</dd>
                </dl>
              </section>
              {session.can('operate') ? <PlanOperations plan={p} onStarted={setStarted} /> : null}
              {started ? (
                <div className="notice" role="status">
                  {started.operation} of the plan started: <Link to={`/jobs/${started.job.id}`}>follow its job</Link>.
                </div>
              ) : null}
              <h2>Groups</h2>
              <Groups plan={p} names={names} />
              <DrillSchedule planId={p.id} />
            </>
          )
        }
      </Loaded>
    </>
  );
}

function Groups({ plan, names }: { plan: RecoveryPlan; names: ItemNames }) {
  return (
    <ol className="plan-groups">
      {plan.groups.map((g, i) => (
        <li key={i} className="panel">
          <h3>
            Group {i + 1}: {g.name}
          </h3>
          <dl className="facts">
            <dt>Items</dt>
            <dd>
              <ul>
                {g.itemIds.map((itemId) => (
                  <li key={itemId}>
                    <Link to={`/items/${itemId}`}>{names.name(itemId) ?? itemId}</Link>
                  </li>
                ))}
              </ul>
            </dd>
            <dt>Pre-scripts</dt>
            <dd>{g.preScripts.length ? g.preScripts.join(', ') : <span className="muted">none</span>}</dd>
            <dt>Manual actions</dt>
            <dd>
              {g.manualActions.length ? (
                <ul>
                  {g.manualActions.map((a, j) => (
                    <li key={j}>{a}</li>
                  ))}
                </ul>
              ) : (
                <span className="muted">none</span>
              )}
            </dd>
            <dt>Post-scripts</dt>
            <dd>{g.postScripts.length ? g.postScripts.join(', ') : <span className="muted">none</span>}</dd>
          </dl>
        </li>
      ))}
    </ol>
  );
}

type PointKind = 'latest-processed' | 'latest-app-consistent' | 'latest';

function PointSelect({ value, onChange }: { value: PointKind; onChange(kind: PointKind): void }) {
  return (
    <Field label="Recovery point" hint="The same choice for every item of the plan.">
      {(p) => (
        <select {...p} value={value} onChange={(e) => onChange(e.target.value as PointKind)}>
          <option value="latest-processed">Latest processed (fastest)</option>
          <option value="latest-app-consistent">Latest app-consistent</option>
          <option value="latest">Latest (process everything first: lowest RPO, slower)</option>
        </select>
      )}
    </Field>
  );
}

/** Test failover, its cleanup and failover of the whole plan: each one job, linked once started. */
function PlanOperations({ plan, onStarted }: { plan: RecoveryPlan; onStarted(started: Started): void }) {
  const [testPoint, setTestPoint] = useState<PointKind>('latest-processed');
  const [failoverPoint, setFailoverPoint] = useState<PointKind>('latest-processed');
  const [notes, setNotes] = useState('');
  const [shutdownSource, setShutdownSource] = useState(false);
  const path = `/api/v1/plans/${encodeURIComponent(plan.id)}`;
  const point = (kind: PointKind): PointChoice => ({ kind });
  return (
    <section className="panel" aria-label="Operations">
      <div className="page-actions">
        <ConfirmAction
          label="Test failover"
          title={`Test failover of ${plan.name}`}
          confirmLabel="Start test failover"
          onConfirm={async () => onStarted({ operation: 'Test failover', job: await api.post<Job>(`${path}/test-failover`, { point: point(testPoint) }) })}
        >
          <p>Every item of the plan boots in the isolated test network, group after group; production is not touched. Clean up when the drill is done.</p>
          <PointSelect value={testPoint} onChange={setTestPoint} />
        </ConfirmAction>
        <ConfirmAction
          label="Cleanup test failover"
          title={`Clean up the test failover of ${plan.name}`}
          confirmLabel="Clean up"
          onConfirm={async () => onStarted({ operation: 'Cleanup test failover', job: await api.post<Job>(`${path}/test-failover/cleanup`, { notes: notes.trim() || null }) })}
        >
          <p>The test machines of the plan's items are shut down and deleted; their drill reports stay.</p>
          <Field label="Notes" hint="Optional: kept in each item's drill report.">
            {(p) => <textarea {...p} rows={3} value={notes} onChange={(e) => setNotes(e.target.value)} />}
          </Field>
        </ConfirmAction>
        <ConfirmAction
          label="Failover"
          title={`Fail over ${plan.name}`}
          confirmLabel="Fail over"
          danger
          onConfirm={async () => onStarted({ operation: 'Failover', job: await api.post<Job>(`${path}/failover`, { point: point(failoverPoint), shutdownSource }) })}
        >
          <p>
            <strong>Production moves to the replicas</strong>, group after group. The sources are fenced; this cannot be cancelled half-way.
          </p>
          <PointSelect value={failoverPoint} onChange={setFailoverPoint} />
          <label>
            <input type="checkbox" checked={shutdownSource} onChange={(e) => setShutdownSource(e.target.checked)} /> Shut down the source machines first
          </label>
        </ConfirmAction>
      </div>
    </section>
  );
}

/** The plan's unattended drills: every N hours, or none (configure to change). */
function DrillSchedule({ planId }: { planId: string }) {
  const session = useSession();
  const path = `/api/v1/plans/${encodeURIComponent(planId)}/drill-settings`;
  const settings = useResource<DrillSettings>(path);
  const [hours, setHours] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const save = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    setSaved(false);
    try {
      const text = (hours ?? '').trim();
      await api.put<DrillSettings>(path, { scheduleEveryHours: text === '' ? null : Number(text) });
      setHours(null);
      setSaved(true);
      settings.reload();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <section className="panel drill-schedule" aria-label="Drill schedule">
      <h2>Drill schedule</h2>
      <Loaded resource={settings}>
        {(s) => (
          <>
            <dl className="facts">
              <dt>Scheduled drills</dt>
              <dd>{s.scheduleEveryHours === null ? 'none' : `every ${s.scheduleEveryHours} h`}</dd>
              <dt>Next drill</dt>
              <dd>{formatTime(s.nextRunAt)}</dd>
              <dt>Last scheduled drill</dt>
              <dd>{formatTime(s.lastRunAt)}</dd>
            </dl>
            {session.can('configure') ? (
              <form onSubmit={save}>
                <Field label="Drill every (hours)" hint="An unattended test failover and cleanup of the whole plan; empty for none.">
                  {(p) => (
                    <input
                      {...p}
                      type="number"
                      min={1}
                      max={8760}
                      value={hours ?? (s.scheduleEveryHours === null ? '' : String(s.scheduleEveryHours))}
                      onChange={(e) => {
                        setHours(e.target.value);
                        setSaved(false);
                      }}
                    />
                  )}
                </Field>
                <ErrorMessage error={error} />
                {saved ? <p role="status">Schedule saved.</p> : null}
                <button type="submit">Save schedule</button>
              </form>
            ) : null}
          </>
        )}
      </Loaded>
    </section>
  );
}
