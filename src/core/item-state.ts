/**
 * The replicated item's life cycle (seed steps 5 and 6, failover, failback), as
 * one table. Pure: the vault loads an item, calls `transition`, stores the
 * result and starts the jobs it names, all in one database transaction.
 *
 *   enabling --start-initial-replication--> initial-replication
 *     --finish-initial-replication--> protected
 *   protected --start-test-failover--> test-failover --cleanup-test-failover-->
 *     test-failover-cleanup --finish-test-failover-cleanup--> protected
 *   protected | test-failover --start-failover--> failing-over --finish-failover-->
 *     failed-over (--change-recovery-point--> failed-over)* --commit--> committed
 *   committed --start-reprotect--> reprotecting --finish-reprotect--> reprotected
 *   reprotected --start-failback--> failing-back --finish-failback--> initial-replication
 *
 * Decisions (design note, 2026-11):
 * - A test failover starts only from `protected`; replication keeps running during
 *   the drill and its cleanup, so production is never touched.
 * - Failover is allowed from `protected` and from `test-failover`: a forgotten drill
 *   must never block a real disaster. From a drill, the action also starts the
 *   drill's cleanup job. It is refused during `test-failover-cleanup` (short; wait).
 * - Failover and failback raise the generation: the side that is no longer the
 *   writer is fenced, its stream refused (GENERATION_FENCED).
 * - The recovery point may change only between failover and commit; commit deletes
 *   the other points, so there is no way back to `failed-over`.
 * - A failover job that failed (a driver missing, a point unreadable) leaves the item
 *   `failing-over`: the source is fenced already, so the only way is forward —
 *   `retry-failover` runs the failover again (the same generation), never back.
 * - A running failover or failback is never cancelled half-way (the seed's warning:
 *   replication is stopped first, so a cancelled failover leaves the machine
 *   unprotected). `cancel-failover` exists only to be refused with that reason;
 *   a failover job found running after a restart resumes (src/core/jobs.ts).
 * - Failback ends in `initial-replication`: replication starts again in the
 *   original direction with a digest-compare resync that ships only changed
 *   blocks, then "Finalize protection" as after enable. Without a direction field
 *   in the model, no test failover of the reverse direction (`reprotected`).
 * - `disable` is allowed where nothing is half-done: not during a drill (clean it
 *   up first), a failover, a cleanup, a reprotect or a failback. `disabled` is final.
 */
import { LifeboatError } from './errors.js';
import type { ItemState, JobKind, ReplicatedItem } from './model.js';

export const ITEM_STATES: readonly ItemState[] = [
  'enabling',
  'initial-replication',
  'protected',
  'test-failover',
  'test-failover-cleanup',
  'failing-over',
  'failed-over',
  'committed',
  'reprotecting',
  'reprotected',
  'failing-back',
  'disabled',
];

export const ITEM_ACTIONS = [
  'start-initial-replication',
  'finish-initial-replication',
  'start-test-failover',
  'cleanup-test-failover',
  'finish-test-failover-cleanup',
  'start-failover',
  'cancel-failover',
  'retry-failover',
  'finish-failover',
  'change-recovery-point',
  'commit',
  'start-reprotect',
  'finish-reprotect',
  'start-failback',
  'finish-failback',
  'disable',
] as const;
export type ItemAction = (typeof ITEM_ACTIONS)[number];

interface Rule {
  /** Target state for each state the action is allowed from. */
  readonly from: Partial<Record<ItemState, ItemState>>;
  /** Jobs the action starts (by source state when it differs). */
  readonly jobs: readonly JobKind[];
  readonly jobsFrom?: Partial<Record<ItemState, readonly JobKind[]>>;
  /** Whether the action fences the old writer by raising the generation. */
  readonly raisesGeneration?: boolean;
  /** A reason printed when refused, beyond "not allowed in state X". */
  readonly refusal?: string;
}

/** The transition table. Every (state, action) pair not listed here is refused. */
export const TRANSITIONS: Readonly<Record<ItemAction, Rule>> = {
  'start-initial-replication': { from: { enabling: 'initial-replication' }, jobs: [] },
  'finish-initial-replication': { from: { 'initial-replication': 'protected' }, jobs: ['finalize-protection'] },
  'start-test-failover': {
    from: { protected: 'test-failover' },
    jobs: ['test-failover'],
    refusal: 'a test failover starts only from a protected item',
  },
  'cleanup-test-failover': { from: { 'test-failover': 'test-failover-cleanup' }, jobs: ['cleanup-test-failover'] },
  'finish-test-failover-cleanup': { from: { 'test-failover-cleanup': 'protected' }, jobs: [] },
  'start-failover': {
    from: { protected: 'failing-over', 'test-failover': 'failing-over' },
    jobs: ['failover'],
    jobsFrom: { 'test-failover': ['cleanup-test-failover', 'failover'] },
    raisesGeneration: true,
    refusal: 'a failover starts from a protected item or during a test failover',
  },
  'cancel-failover': {
    from: {},
    jobs: [],
    refusal:
      'a failover in progress is never cancelled half-way: replication is stopped before it starts, so cancelling would leave the machine unprotected; let it finish, then commit',
  },
  'retry-failover': {
    from: { 'failing-over': 'failing-over' },
    jobs: ['failover'],
    refusal: 'a failover is run again only while the item is failing over and its last failover job failed',
  },
  'finish-failover': { from: { 'failing-over': 'failed-over' }, jobs: [] },
  'change-recovery-point': {
    from: { 'failed-over': 'failed-over' },
    jobs: ['change-recovery-point'],
    refusal: 'the recovery point can change only after a failover and before commit',
  },
  commit: { from: { 'failed-over': 'committed' }, jobs: ['commit'] },
  'start-reprotect': { from: { committed: 'reprotecting' }, jobs: ['reprotect'], refusal: 'reprotect follows a committed failover' },
  'finish-reprotect': { from: { reprotecting: 'reprotected' }, jobs: [] },
  'start-failback': {
    from: { reprotected: 'failing-back' },
    jobs: ['failback'],
    raisesGeneration: true,
    refusal: 'failback needs a reprotected item (reverse replication running)',
  },
  'finish-failback': { from: { 'failing-back': 'initial-replication' }, jobs: [] },
  disable: {
    from: {
      enabling: 'disabled',
      'initial-replication': 'disabled',
      protected: 'disabled',
      'failed-over': 'disabled',
      committed: 'disabled',
      reprotected: 'disabled',
    },
    jobs: [],
    refusal: 'replication can be disabled only when no drill, failover, cleanup, reprotect or failback is in progress',
  },
};

/** The part of a replicated item the state machine owns. */
export type ItemStatus = Pick<ReplicatedItem, 'state' | 'generation' | 'initialReplicationPercent'>;

export interface TransitionResult extends ItemStatus {
  /** Jobs to start, in order, in the same transaction as the state change. */
  readonly jobs: readonly JobKind[];
}

/** A newly enabled item and the job that enables it. */
export function enableItem(): TransitionResult {
  return { state: 'enabling', generation: 1, initialReplicationPercent: 0, jobs: ['enable-protection'] };
}

export function allowedActions(state: ItemState): ItemAction[] {
  return ITEM_ACTIONS.filter((a) => TRANSITIONS[a].from[state] !== undefined);
}

export function transition(item: ItemStatus, action: ItemAction): TransitionResult {
  const rule: Rule | undefined = TRANSITIONS[action];
  if (rule === undefined) throw new LifeboatError('VALIDATION', `unknown item action '${String(action)}'`, { details: { action } });
  const to = rule.from[item.state];
  if (to === undefined) {
    const allowed = allowedActions(item.state);
    throw new LifeboatError(
      'ILLEGAL_TRANSITION',
      `cannot ${action} a replicated item in state '${item.state}'${rule.refusal ? `: ${rule.refusal}` : ''}`,
      { details: { state: item.state, action, allowed } },
    );
  }
  const generation = rule.raisesGeneration ? item.generation + 1 : item.generation;
  let percent = item.initialReplicationPercent;
  if (to === 'initial-replication' && item.state !== 'initial-replication') percent = 0;
  if (action === 'finish-initial-replication') percent = 100;
  return { state: to, generation, initialReplicationPercent: percent, jobs: rule.jobsFrom?.[item.state] ?? rule.jobs };
}

/**
 * Initial replication progress. Reports may arrive out of order, so a lower
 * value than the one stored is ignored rather than shown as going backwards.
 */
export function setInitialReplicationProgress(item: ItemStatus, percent: number): ItemStatus {
  if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
    throw new LifeboatError('VALIDATION', `initial replication progress must be 0..100, not ${percent}`, { details: { percent } });
  }
  if (item.state !== 'initial-replication') {
    throw new LifeboatError('ILLEGAL_TRANSITION', `no initial replication runs in state '${item.state}'`, {
      details: { state: item.state, action: 'report-initial-replication-progress' },
    });
  }
  return { ...item, initialReplicationPercent: Math.max(item.initialReplicationPercent, percent) };
}
