import { LifeboatError, asLifeboatError, isLifeboatError } from '../../core/errors.js';
import { transition } from '../../core/item-state.js';
import { JOB_KINDS } from '../../core/jobs.js';
import type { ItemState, ReplicatedItem } from '../../core/model.js';
import { pointsToKeep } from '../../core/retention.js';
import { hostname } from 'node:os';
import { pointCapturedAt, type PointManifest } from '../../format/manifest.js';
import type { LockRecord } from '../../store/disk-lock.js';
import { processJournal } from '../../store/journal.js';
import type { Repository } from '../../store/repository.js';
import { Periodic } from '../services/periodic.js';
import type { Repositories } from '../db/repositories/index.js';
import type { StepHandler } from '../jobs/runner.js';
import { redact } from '../secrets/redact.js';
import { storeDiskName } from '../services/agents.js';

/**
 * The replica processor (docs/replication.md, "Replica processor"): turns the journal
 * segments the process server stored into recovery points, applies retention and
 * measures each item's RPO.
 *
 * Every `tickMs` (default 1 s) it looks at every item in a replicating state and
 * processes those whose policy's `crashConsistentFrequencySeconds` has passed since
 * their last run. Per disk (`<itemId>.<diskName>` in the vault's store):
 * 1. processJournal until nothing is pending (whole cuts only; an app-consistent cut
 *    alone as an `app` point). A JOURNAL_GAP stops that disk and is kept as the item's
 *    journal gap (the alert evaluator raises `journal-gap` from it); it never stops the loop;
 * 2. retention: points whose capture is older than `retentionHours` are deleted, except the
 *    newest point and the newest app-consistent one;
 * 3. the item's RPO: now − the oldest of its disks' newest capture times, null while a disk
 *    has no point yet; between runs it is kept up to date every few seconds from that time.
 * An item in initial replication whose disks all have a point becomes `protected` and its
 * "Finalize protection" job is queued, in one transaction.
 *
 * One item is processed by one run at a time (processNow waits for a run in progress).
 */

export const REPLICATING_STATES: readonly ItemState[] = ['initial-replication', 'protected', 'test-failover', 'test-failover-cleanup'];
/** A runaway journal (thousands of cuts pending) is worked off over several runs, not one. */
const MAX_POINTS_PER_RUN = 1000;
/** How often a disk's points are thinned (src/core/retention.ts). */
const RETAIN_INTERVAL_MS = 30_000;
/** Between runs, a stored RPO is brought up to date once it is this far behind. */
const RPO_REFRESH_SECONDS = 5;

export interface ReplicaStores {
  openVaultStore(vaultId: string): Promise<Repository>;
}

export interface DiskOutcome {
  readonly disk: string;
  readonly pointsMade: number;
  readonly pointsPruned: number;
  readonly newest: PointManifest | undefined;
  /** The error that stopped this disk's processing (a JOURNAL_GAP, an unreadable store...). */
  readonly error: string | null;
}

export interface ItemOutcome {
  readonly itemId: string;
  readonly rpoSeconds: number | null;
  readonly disks: readonly DiskOutcome[];
  /** The item left initial replication in this run. */
  readonly protectedNow: boolean;
}

export interface ReplicaLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ReplicaProcessorOptions {
  readonly repos: Repositories;
  readonly stores: ReplicaStores;
  readonly now: () => Date;
  /** How often items are looked at; default 1000 ms (no item is processed more often than its policy says). */
  readonly tickMs?: number;
  readonly logger?: ReplicaLogger;
}

export class ReplicaProcessor {
  private readonly lastRunMs = new Map<string, number>();
  private readonly running = new Map<string, Promise<ItemOutcome>>();
  /** Item id → the journal gap that stops one of its disks (cleared by a run without one). */
  private readonly gaps = new Map<string, string>();
  private readonly lastRetainMs = new Map<string, number>();
  /** Item id → the oldest of its disks' newest capture times (ms), as the last run found it. */
  private readonly oldestNewestCapture = new Map<string, number>();
  private readonly loop: Periodic;
  private stopped = false;

  constructor(private readonly options: ReplicaProcessorOptions) {
    this.loop = new Periodic(() => this.tick(), options.tickMs ?? 1000);
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop.stop();
    await Promise.all([...this.running.values()].map((p) => p.catch(() => undefined)));
  }

  /** Journal gaps by item, for the alert evaluator. */
  journalGaps(): { subjectId: string; message: string }[] {
    return [...this.gaps].map(([subjectId, message]) => ({ subjectId, message }));
  }

  /** One pass over every replicating item whose frequency has come (errors are logged, never thrown). */
  async tick(): Promise<void> {
    const { repos, now } = this.options;
    try {
      const policies = new Map((await repos.policies.list()).map((p) => [p.id, p]));
      const items = (await repos.items.list()).filter((i) => REPLICATING_STATES.includes(i.state));
      for (const gone of [...this.gaps.keys()]) if (!items.some((i) => i.id === gone)) this.gaps.delete(gone);
      for (const item of items) {
        if (this.stopped) return;
        const policy = policies.get(item.policyId);
        if (!policy) continue;
        const last = this.lastRunMs.get(item.id);
        if (last !== undefined && now().getTime() - last < policy.crashConsistentFrequencySeconds * 1000) {
          await this.refreshRpo(item);
          continue;
        }
        await this.processNow(item.id).catch((err: unknown) => {
          this.options.logger?.error({ err, itemId: item.id }, 'replica processing failed');
        });
      }
    } catch (err) {
      this.options.logger?.error({ err }, 'replica processor pass failed');
    }
  }

  /**
   * Processes one item now (waiting for a run already in progress, then running again).
   * `duringFailover`: also an item failing over, once its source is fenced (the failover's
   * "Process data up to the recovery point": what arrived before the fence becomes points).
   */
  processNow(itemId: string, options: { duringFailover?: boolean } = {}): Promise<ItemOutcome> {
    const previous = this.running.get(itemId) ?? Promise.resolve(undefined);
    const next = previous.catch(() => undefined).then(() => this.process(itemId, options.duringFailover === true));
    this.running.set(itemId, next);
    void next.finally(() => {
      if (this.running.get(itemId) === next) this.running.delete(itemId);
    }).catch(() => undefined);
    return next;
  }

  /**
   * Between runs the RPO keeps growing: it is recomputed from the capture time the last
   * run found, and stored when it moved by RPO_REFRESH_SECONDS or more (not every second
   * for every item), so the alert evaluator sees it within seconds, not a policy period.
   */
  private async refreshRpo(item: ReplicatedItem): Promise<void> {
    const oldest = this.oldestNewestCapture.get(item.id);
    if (oldest === undefined || this.running.has(item.id)) return;
    const rpoSeconds = Math.max(0, Math.floor((this.options.now().getTime() - oldest) / 1000));
    if (item.rpoSeconds !== null && Math.abs(rpoSeconds - item.rpoSeconds) < RPO_REFRESH_SECONDS) return;
    await this.options.repos.items.update(item.id, { rpoSeconds });
  }

  private async process(itemId: string, duringFailover = false): Promise<ItemOutcome> {
    const { repos, now, stores } = this.options;
    this.lastRunMs.set(itemId, now().getTime());
    const item = await repos.items.get(itemId);
    if (!REPLICATING_STATES.includes(item.state) && !(duringFailover && item.state === 'failing-over')) {
      throw new LifeboatError('ILLEGAL_TRANSITION', `item ${item.id} does not replicate in state '${item.state}'`, { details: { state: item.state } });
    }
    if (item.disks.length === 0) return { itemId, rpoSeconds: null, disks: [], protectedNow: false };
    const policy = await repos.policies.get(item.policyId);
    const repo = await stores.openVaultStore(item.vaultId);
    const inUse = await pointsInUse(repos, item.id);
    const disks: DiskOutcome[] = [];
    let gap: string | undefined;
    for (const d of item.disks) {
      const outcome = await this.processDisk(repo, storeDiskName(item.id, d.name), policy.retentionHours, inUse);
      if (outcome.gap) gap ??= outcome.gap;
      disks.push(outcome.result);
    }
    if (gap) this.gaps.set(item.id, gap);
    else this.gaps.delete(item.id);

    const at = now().getTime();
    const newest = disks.map((d) => d.newest);
    const oldest = newest.every((p) => p !== undefined) ? Math.min(...newest.map((p) => Date.parse(pointCapturedAt(p as PointManifest)))) : undefined;
    if (oldest === undefined) this.oldestNewestCapture.delete(item.id);
    else this.oldestNewestCapture.set(item.id, oldest);
    const rpoSeconds = oldest === undefined ? null : Math.max(0, Math.floor((at - oldest) / 1000));
    const fresh = await repos.items.get(item.id);
    if (fresh.rpoSeconds !== rpoSeconds) await repos.items.update(item.id, { rpoSeconds });
    let protectedNow = false;
    if (rpoSeconds !== null && fresh.state === 'initial-replication') protectedNow = await this.finishInitialReplication(fresh);
    return { itemId, rpoSeconds, disks, protectedNow };
  }

  private async processDisk(repo: Repository, disk: string, retentionHours: number, inUse: ReadonlySet<string>): Promise<{ result: DiskOutcome; gap?: string }> {
    let made = 0;
    let error: string | null = null;
    let gap: string | undefined;
    try {
      while (made < MAX_POINTS_PER_RUN) {
        let point: PointManifest | undefined;
        try {
          point = await processJournal(repo, disk);
        } catch (err) {
          if (!leftByDeadProcess(err)) throw err;
          // A vault killed while processing this disk left its lock; waiting out the lock's TTL would stop points for 10 minutes.
          this.options.logger?.warn({ disk, holder: asLifeboatError(err).details.holder }, 'taking over the disk lock of a journal-process that is gone');
          point = await processJournal(repo, disk, { breakLock: true });
        }
        if (!point) break;
        made++;
      }
    } catch (err) {
      const e = asLifeboatError(err);
      error = redact(`${e.code}: ${e.message}`);
      if (isLifeboatError(err, 'JOURNAL_GAP')) {
        gap = `disk ${disk}: ${e.message}`;
        this.options.logger?.warn({ disk, code: e.code, details: e.details }, 'journal gap: processing of the disk stops at the gap');
      } else this.options.logger?.error({ disk, err }, 'journal processing failed');
    }
    const pruned = await this.retain(repo, disk, retentionHours, inUse);
    return { result: { disk, pointsMade: made, pointsPruned: pruned, newest: await repo.latestPoint(disk), error }, ...(gap ? { gap } : {}) };
  }

  /**
   * Thins the disk's points (src/core/retention.ts: all of the last minutes, one a
   * minute for an hour, one per five minutes up to the retention, every app-consistent
   * one; never the newest nor the newest app-consistent). Reading every manifest costs
   * one object per point, so it runs at most every RETAIN_INTERVAL_MS per disk. A point
   * a recovered machine or a running drill of the item uses (`inUse`) is never deleted.
   */
  private async retain(repo: Repository, disk: string, retentionHours: number, inUse: ReadonlySet<string>): Promise<number> {
    const nowMs = this.options.now().getTime();
    if (nowMs - (this.lastRetainMs.get(disk) ?? -Infinity) < RETAIN_INTERVAL_MS) return 0;
    this.lastRetainMs.set(disk, nowMs);
    const points = await repo.listPoints(disk);
    const keep = pointsToKeep(
      points.map((p) => ({ id: p.pointId, capturedAtMs: Date.parse(pointCapturedAt(p)), appConsistent: p.consistency === 'app' })),
      nowMs,
      retentionHours,
    );
    let pruned = 0;
    for (const p of points) {
      if (keep.has(p.pointId) || inUse.has(p.pointId)) continue;
      await repo.deletePoint(p);
      pruned++;
    }
    return pruned;
  }

  /** initial-replication → protected and the "Finalize protection" job, in one transaction. */
  private async finishInitialReplication(item: ReplicatedItem): Promise<boolean> {
    const { repos } = this.options;
    const next = transition(item, 'finish-initial-replication');
    const done = await repos.db.transaction(async () => {
      if (!(await repos.items.updateState(item.id, item.state, next.state, { initialReplicationPercent: next.initialReplicationPercent }))) return false;
      for (const kind of next.jobs) {
        await repos.jobs.create({ kind, itemId: item.id, initiator: 'replica-processor', steps: JOB_KINDS[kind].steps.map((s) => s.name) });
      }
      return true;
    });
    if (done) this.options.logger?.info({ itemId: item.id }, 'initial replication complete: item protected');
    return done;
  }
}

/** The points of an item that its recovered machines and its running drills use: retention keeps them. */
async function pointsInUse(repos: Repositories, itemId: string): Promise<Set<string>> {
  const machines = await repos.recoveredMachines.listByItem(itemId);
  const drills = (await repos.drillReports.listByItem(itemId)).filter((r) => r.outcome === 'running');
  return new Set([...machines.map((m) => m.point), ...drills.map((r) => r.point)].flatMap((p) => p?.disks.map((d) => d.pointId) ?? []));
}

/**
 * The "Finalize protection" steps. Each succeeds only when what it names is true:
 * the item is protected; its agent is enrolled for exactly the item's disks; every
 * disk has a recovery point in the vault's store.
 */
export function finalizeProtectionHandlers(stores: ReplicaStores): Readonly<Record<string, StepHandler>> {
  const itemOf = async (ctx: Parameters<StepHandler>[0]): Promise<ReplicatedItem> => {
    if (ctx.job.itemId === null) throw new LifeboatError('INTERNAL', `job ${ctx.job.id} names no replicated item`);
    return ctx.repos.items.get(ctx.job.itemId);
  };
  return {
    'Prerequisites check': async (ctx) => {
      const item = await itemOf(ctx);
      if (!REPLICATING_STATES.includes(item.state) || item.state === 'initial-replication') {
        throw new LifeboatError('ILLEGAL_TRANSITION', `the item is '${item.state}', not protected`);
      }
      if (item.disks.length === 0) throw new LifeboatError('VALIDATION', `item ${item.id} has no disks`);
    },
    'Finalize protection on the primary': async (ctx) => {
      const item = await itemOf(ctx);
      const agent = await ctx.repos.agents.findByItem(item.id);
      if (!agent) throw new LifeboatError('NOT_FOUND', `no agent is enrolled for item ${item.id}`);
      const reported = new Set(agent.disks.map((d) => d.name));
      const missing = item.disks.filter((d) => !reported.has(d.name)).map((d) => d.name);
      if (missing.length > 0) throw new LifeboatError('VALIDATION', `the agent of item ${item.id} does not replicate disk(s) ${missing.join(', ')}`);
    },
    'Start continuous replication': async (ctx) => {
      const item = await itemOf(ctx);
      const repo = await stores.openVaultStore(item.vaultId);
      for (const d of item.disks) {
        if (!(await repo.latestPoint(storeDiskName(item.id, d.name)))) {
          throw new LifeboatError('NOT_FOUND', `disk ${d.name} of item ${item.id} has no recovery point yet`);
        }
      }
    },
  };
}

/**
 * DISK_LOCKED by a journal-process of this host whose process no longer exists: the lock
 * of a vault killed mid-run (kill -9, power loss of the process), never refreshed again.
 * A live holder (the CLI's `journal process`, another vault process) is never broken.
 */
function leftByDeadProcess(err: unknown): boolean {
  if (!isLifeboatError(err, 'DISK_LOCKED')) return false;
  const holder = err.details.holder as Partial<LockRecord> | undefined;
  if (holder?.operation !== 'journal-process' || holder.host !== hostname() || typeof holder.pid !== 'number' || holder.pid === process.pid) return false;
  try {
    process.kill(holder.pid, 0);
    return false; // alive
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
