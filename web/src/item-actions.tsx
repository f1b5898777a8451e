import { useState, type FormEvent } from 'react';
import { api } from './api';
import { ConfirmAction, ErrorMessage, Field, useAction, useResource } from './components';
import { PointPicker, toPointChoice, usePointPicker } from './point-picker';
import { Link } from './router';
import { allowedActions, type ItemAction, type ItemPoint, type ItemState, type Job, type PointChoice, type ReplicatedItem } from './types';

/**
 * The recovery actions of one replicated item (docs/recovery.md, "Operations"), for
 * callers with the `operate` permission: each behind a dialog that says what will
 * happen, each answered with the job it started.
 */

export type ItemOperation = 'test-failover' | 'cleanup-test-failover' | 'failover' | 'change-point' | 'commit' | 'reprotect' | 'failback';

/** The portal's operations, by the state machine's actions that start them (src/core/item-state.ts). */
const OPERATION_OF: Partial<Record<ItemAction, ItemOperation>> = {
  'start-test-failover': 'test-failover',
  'cleanup-test-failover': 'cleanup-test-failover',
  'start-failover': 'failover',
  'retry-failover': 'failover',
  'change-recovery-point': 'change-point',
  commit: 'commit',
  'start-reprotect': 'reprotect',
  'start-failback': 'failback',
};

/**
 * The operations the vault accepts in `state`: the item state machine's own table,
 * plus the reverse routes' rule that a failed reprotect or failback is run again in
 * its own state (src/vault/reverse/routes.ts).
 */
export function allowedOperations(state: ItemState): readonly ItemOperation[] {
  const ops = allowedActions(state).flatMap((a) => OPERATION_OF[a] ?? []);
  if (state === 'reprotecting') ops.push('reprotect');
  if (state === 'failing-back') ops.push('failback');
  return [...new Set(ops)];
}

/** States in which the source replicates forward, so pause and resume apply (src/vault/services/agents.ts setControl). */
const CONTROLLABLE: ReadonlySet<ItemState> = new Set(['enabling', 'initial-replication', 'protected', 'test-failover', 'test-failover-cleanup']);

export function canPauseReplication(state: ItemState): boolean {
  return CONTROLLABLE.has(state);
}

interface Started {
  readonly what: string;
  readonly job: Job;
}

export function ItemActions({
  item,
  points,
  pointsUnavailable,
  onChanged,
}: {
  item: ReplicatedItem;
  points: readonly ItemPoint[] | undefined;
  pointsUnavailable: string | undefined;
  onChanged(): void;
}) {
  const [started, setStarted] = useState<Started | null>(null);
  const base = `/api/v1/items/${encodeURIComponent(item.id)}`;
  const run = async (what: string, path: string, body: unknown = {}) => {
    const job = await api.post<Job>(`${base}${path}`, body);
    setStarted({ what, job });
    onChanged();
  };
  const ops = allowedOperations(item.state);
  const picker = { points, pointsUnavailable };
  return (
    <section className="panel" aria-labelledby="item-actions">
      <h2 id="item-actions">Actions</h2>
      {started ? (
        <p className="notice" role="status">
          {started.what} started. <Link to={`/jobs/${started.job.id}`}>Follow job {started.job.id}</Link>
        </p>
      ) : null}
      {ops.length === 0 ? <p className="muted">No recovery action is possible while the item is {item.state}.</p> : null}
      <div className="page-actions">
        {ops.includes('test-failover') ? <TestFailover {...picker} onStart={(point) => run('Test failover', '/test-failover', { point })} /> : null}
        {ops.includes('cleanup-test-failover') ? <CleanupTestFailover onStart={(notes) => run('Cleanup of the test failover', '/test-failover/cleanup', notes ? { notes } : {})} /> : null}
        {ops.includes('failover') ? (
          <Failover {...picker} retry={item.state === 'failing-over'} fromDrill={item.state === 'test-failover'} onStart={(body) => run('Failover', '/failover', body)} />
        ) : null}
        {ops.includes('change-point') ? <ChangePoint {...picker} onStart={(point) => run('Change of recovery point', '/change-point', { point })} /> : null}
        {ops.includes('commit') ? (
          <ConfirmAction label="Commit" title="Commit the failover" confirmLabel="Commit" onConfirm={() => run('Commit', '/commit')}>
            <p>
              The replica machine stays where it is and every other recovery point of this item is deleted. After a commit the recovery point can no
              longer be changed; reprotect comes next.
            </p>
          </ConfirmAction>
        ) : null}
        {ops.includes('reprotect') ? (
          <ConfirmAction label="Reprotect" title="Reprotect" confirmLabel="Start reprotect" onConfirm={() => run('Reprotect', '/reprotect')}>
            <p>
              The primary machine&apos;s agent becomes the target of reverse replication: the blocks that differ between the replica and the primary are
              copied to the primary, then every change of the replica follows. The primary machine must be off.
            </p>
          </ConfirmAction>
        ) : null}
        {ops.includes('failback') ? (
          <ConfirmAction label="Failback" title="Fail back to the primary machine" confirmLabel="Start failback" danger onConfirm={() => run('Failback', '/failback')}>
            <p>
              The replica machine is shut down and fenced, its last changes are written to the primary machine, replication resumes in the original
              direction and the primary machine is started. Production moves back to the primary.
            </p>
          </ConfirmAction>
        ) : null}
      </div>
      {canPauseReplication(item.state) ? <ReplicationControl base={base} /> : null}
    </section>
  );
}

type PickerProps = { points: readonly ItemPoint[] | undefined; pointsUnavailable: string | undefined };

function TestFailover({ onStart, ...picker }: PickerProps & { onStart(point: PointChoice): Promise<void> }) {
  const [value, setValue] = usePointPicker();
  return (
    <ConfirmAction label="Test failover" title="Test failover" confirmLabel="Start test failover" onConfirm={() => onStart(toPointChoice(value))}>
      <p>
        A test machine is created from the chosen recovery point in the isolated network and started; the drill report records its boot and probes.
        Replication keeps running and nothing of the source machine is touched. Clean the test failover up when you are done.
      </p>
      <PointPicker value={value} onChange={setValue} {...picker} />
    </ConfirmAction>
  );
}

function CleanupTestFailover({ onStart }: { onStart(notes: string): Promise<void> }) {
  const [notes, setNotes] = useState('');
  return (
    <ConfirmAction label="Cleanup test failover" title="Clean up the test failover" confirmLabel="Clean up" onConfirm={() => onStart(notes.trim())}>
      <p>The test machine is stopped and deleted. Its console tail and your notes are kept in the drill report; the item returns to protected.</p>
      <Field label="Notes" hint="What the drill showed; kept in the drill report.">
        {(props) => <textarea {...props} rows={4} value={notes} onChange={(e) => setNotes(e.target.value)} />}
      </Field>
    </ConfirmAction>
  );
}

function Failover({
  onStart,
  retry,
  fromDrill,
  ...picker
}: PickerProps & { retry: boolean; fromDrill: boolean; onStart(body: { point: PointChoice; shutdownSource: boolean }): Promise<void> }) {
  const [value, setValue] = usePointPicker();
  const [shutdownSource, setShutdownSource] = useState(false);
  return (
    <ConfirmAction
      label={retry ? 'Run failover again' : 'Failover'}
      title="Failover"
      confirmLabel="Fail over"
      danger
      onConfirm={() => onStart({ point: toPointChoice(value), shutdownSource })}
    >
      <p>
        <strong>Production moves to the replica.</strong> The source machine is fenced (its replication stops and is refused from now on), and the
        replica machine is created from the chosen point and started. A failover is never cancelled half-way.
      </p>
      {fromDrill ? <p>The test failover under way is cleaned up first.</p> : null}
      {retry ? <p>The last failover job of this item did not finish: it runs again, forward.</p> : null}
      <PointPicker value={value} onChange={setValue} {...picker} />
      <label>
        <input type="checkbox" checked={shutdownSource} onChange={(e) => setShutdownSource(e.target.checked)} /> Shut down the source machine first
      </label>
    </ConfirmAction>
  );
}

function ChangePoint({ onStart, ...picker }: PickerProps & { onStart(point: PointChoice): Promise<void> }) {
  const [value, setValue] = usePointPicker();
  return (
    <ConfirmAction label="Change recovery point" title="Change the recovery point" confirmLabel="Change point" onConfirm={() => onStart(toPointChoice(value))}>
      <p>The replica machine is stopped and created again from the chosen point. What it wrote since the failover is lost.</p>
      <PointPicker value={value} onChange={setValue} {...picker} />
    </ConfirmAction>
  );
}

/**
 * Pause, resume and the bandwidth limit: the agent stops (or starts again) shipping, or
 * changes its pace, at its next heartbeat; changes are kept, not lost.
 */
function ReplicationControl({ base }: { base: string }) {
  const control = useResource<ReplicationControlState>(`${base}/replication-control`);
  const { busy, error, run } = useAction();
  const [said, setSaid] = useState<string | null>(null);
  const [mbps, setMbps] = useState('');
  const send = (what: 'pause' | 'resume') =>
    run(async () => {
      const next = await api.post<ReplicationControlState>(`${base}/${what}`);
      setSaid(next.paused ? 'Replication is paused: the agent stops shipping at its next heartbeat.' : 'Replication runs: the agent ships again at its next heartbeat.');
      control.reload();
    });
  const throttle = (e: FormEvent) => {
    e.preventDefault();
    void run(async () => {
      const next = await api.patch<ReplicationControlState>(`${base}/throttle`, { throttleMbps: Number(mbps) });
      setSaid(next.throttleBytesPerSec === 0 ? 'No bandwidth limit.' : `Bandwidth limited to ${mbpsOf(next)} Mbit/s.`);
      setMbps('');
      control.reload();
    });
  };
  const now = control.data;
  return (
    <div>
      <h3>Replication</h3>
      <p>
        {now === undefined
          ? 'Loading…'
          : `${now.paused ? 'Paused' : 'Running'}; bandwidth ${now.throttleBytesPerSec === 0 ? 'not limited' : `limited to ${mbpsOf(now)} Mbit/s`}.`}
      </p>
      <div className="page-actions">
        {now && !now.paused ? (
          <button type="button" disabled={busy} onClick={() => void send('pause')}>
            Pause replication
          </button>
        ) : null}
        {now?.paused ? (
          <button type="button" disabled={busy} onClick={() => void send('resume')}>
            Resume replication
          </button>
        ) : null}
      </div>
      <form onSubmit={throttle} aria-label="Bandwidth limit">
        <Field label="Bandwidth limit (Mbit/s, 0 = none)">
          {(p) => <input {...p} type="number" min={0} step="any" required value={mbps} onChange={(e) => setMbps(e.target.value)} />}
        </Field>
        <button type="submit" disabled={busy}>
          Set bandwidth limit
        </button>
      </form>
      {said ? (
        <p className="notice" role="status">
          {said}
        </p>
      ) : null}
      <ErrorMessage error={error ?? control.error} />
    </div>
  );
}

/** `POST /items/:id/pause|resume`, `PATCH …/throttle`, `GET …/replication-control`. */
interface ReplicationControlState {
  readonly paused: boolean;
  readonly throttleBytesPerSec: number;
}

/** 1 Mbit/s = 125,000 bytes/s (docs/api.md). */
function mbpsOf(c: ReplicationControlState): number {
  return Math.round((c.throttleBytesPerSec / 125_000) * 100) / 100;
}
