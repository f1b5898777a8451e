import { LifeboatError } from '../../core/errors.js';
import { transition } from '../../core/item-state.js';
import type { ItemState, ReplicatedItem } from '../../core/model.js';
import { backupSource } from '../../store/backup.js';
import type { StepContext, StepHandler, StepHandlers } from '../jobs/runner.js';
import { machineIdOf } from '../recovery/machines.js';
import type { RecoveryDeps } from '../recovery/module.js';
import { storeDiskName } from '../services/agents.js';
import type { ReverseEngine } from './engine.js';
import type { ReverseLoops } from './loop.js';
import { startSource } from './source-control.js';

/**
 * The steps of the `reprotect` and `failback` jobs (src/core/jobs.ts; docs/recovery.md,
 * "Reprotect and failback"). Each step can run again after a vault restart: what it
 * did is read back (the reverse state, the item's state, the store's newest point)
 * rather than done twice.
 */

export interface ReverseTimeouts {
  /** The agent's first heartbeat in reverse mode, and its digests. */
  readonly agentMs: number;
  /** The agent writing everything queued. */
  readonly drainMs: number;
}

export const DEFAULT_TIMEOUTS: ReverseTimeouts = { agentMs: 5 * 60_000, drainMs: 24 * 3600_000 };
/** Digest checks at failback: a difference found is shipped and the disks compared again, this many times at most. */
const FINAL_CHECKS = 3;

export function reverseHandlers(deps: RecoveryDeps, engine: ReverseEngine, loops: ReverseLoops, timeouts: ReverseTimeouts): StepHandlers {
  const { repos, compute } = deps;

  const load = async (ctx: StepContext, states: readonly ItemState[]): Promise<ReplicatedItem> => {
    if (ctx.job.itemId === null) throw new LifeboatError('INTERNAL', `job ${ctx.job.id} names no replicated item`);
    const item = await repos.items.get(ctx.job.itemId);
    if (!states.includes(item.state)) {
      throw new LifeboatError('ILLEGAL_TRANSITION', `item ${item.id} is '${item.state}', not ${states.map((s) => `'${s}'`).join(' or ')}`, { details: { state: item.state } });
    }
    return item;
  };

  const replica = async (item: ReplicatedItem): Promise<string> => {
    const id = machineIdOf('failover', item.id);
    if (!(await repos.recoveredMachines.find(id))) throw new LifeboatError('NOT_FOUND', `item ${item.id} has no replica machine (${id})`, { details: { item: item.id } });
    return id;
  };

  const progress = (ctx: StepContext) => (percent: number) => void ctx.progress(Math.max(0, Math.min(100, percent))).catch(() => undefined);

  const agentInMode = async (item: ReplicatedItem, mode: 'reverse' | 'replicate', signal: AbortSignal, sinceMs: number): Promise<boolean> =>
    (await deps.agents.waitForReport(item.id, (r) => (r.mode === mode ? true : undefined), { timeoutMs: timeouts.agentMs, signal, sinceMs })) === true;

  const reprotect: Record<string, StepHandler> = {
    'Prerequisites check': async (ctx) => {
      const item = await load(ctx, ['reprotecting']);
      await replica(item);
      if (!compute.capabilities.changeTracking) {
        throw new LifeboatError('UNSUPPORTED', `the ${compute.name} compute driver does not track the replica's writes: reverse replication needs it`);
      }
      if (!(await repos.agents.findByItem(item.id))) throw new LifeboatError('NOT_FOUND', `no agent has enrolled for item ${item.id}: reverse replication writes through it`);
    },
    'Prepare reverse replication': async (ctx) => {
      const item = await load(ctx, ['reprotecting']);
      await engine.begin(item, await replica(item), ctx.job.id);
      // The vault answers the agent `mode: reverse` from the state's change on: wait until it obeys.
      if (!(await agentInMode(item, 'reverse', ctx.signal, 0))) {
        throw new LifeboatError('TIMEOUT', `the agent of item ${item.id} did not report reverse mode within ${timeouts.agentMs / 1000} s: is it running on the primary machine (or its host)?`);
      }
    },
    'Synchronize changed blocks': async (ctx) => {
      const item = await load(ctx, ['reprotecting']);
      const state = await engine.begin(item, await replica(item), ctx.job.id);
      if (state.comparedRequest === null) {
        // The trackers start afresh first: what the replica wrote before is in the compare, what it writes after in the next cut.
        await engine.resetChanges(item);
        const blocks = await engine.compare(item, ctx.signal, timeouts.agentMs);
        deps.logger.info({ itemId: item.id, jobId: ctx.job.id, blocks }, 'reprotect: blocks that differ queued for the agent');
      }
      const done = await engine.drained(item.id, ctx.signal, { timeoutMs: timeouts.drainMs, onProgress: progress(ctx) });
      deps.logger.info({ itemId: item.id, jobId: ctx.job.id, bytes: done.jobs[ctx.job.id]?.bytes ?? 0 }, 'reprotect: the primary machine is in sync');
    },
    'Start reverse replication': async (ctx) => {
      const item = await load(ctx, ['reprotecting', 'reprotected']);
      if (item.state === 'reprotecting') {
        const next = transition(item, 'finish-reprotect');
        if (!(await repos.items.updateState(item.id, item.state, next.state))) throw new LifeboatError('CONFLICT', `item ${item.id} changed state during the reprotect`);
      }
      loops.start(item.id);
    },
  };

  const failback: Record<string, StepHandler> = {
    'Prerequisites check for failback': async (ctx) => {
      const item = await load(ctx, ['failing-back']);
      await replica(item);
      await engine.requireState(item.id);
    },
    'Shut down the replica virtual machine': async (ctx) => {
      const item = await load(ctx, ['failing-back']);
      const id = await replica(item);
      // A last cut while the replica still runs (its change tracker needs QEMU): the blocks it wrote
      // since the loop's last cut are queued at 4 KiB; only what it writes while shutting down is
      // left to the digest compare of the next step.
      await loops.stop(item.id);
      if ((await compute.status(id)).state === 'running') {
        try {
          await engine.begin(item, id, ctx.job.id);
          await engine.cutChanges(item);
        } catch (err) {
          if (ctx.signal.aborted) throw err;
          deps.logger.warn({ itemId: item.id, jobId: ctx.job.id, error: (err as Error).message }, 'failback: no last cut before the replica stopped; the digest compare ships its last changes');
        }
      }
      await compute.stop(id, { graceful: true, timeoutMs: 120_000 });
      await repos.recoveredMachines.update(id, { state: 'stopped' });
    },
    'Fence the replica': async (ctx) => {
      const item = await load(ctx, ['failing-back']);
      const id = await replica(item);
      // The transition raised the generation; no more cuts are taken by the loop, and the replica is off
      // (hard, if the graceful shutdown failed): nothing it writes can be missed by the last sync.
      await loops.stop(item.id);
      if ((await compute.status(id)).state === 'running') await compute.stop(id, { graceful: false });
      await repos.recoveredMachines.update(id, { state: 'stopped' });
    },
    'Synchronize the last changes': async (ctx) => {
      const item = await load(ctx, ['failing-back']);
      const id = await replica(item);
      await engine.begin(item, id, ctx.job.id);
      const store = await deps.stores.openVaultStore(item.vaultId);
      const written = await Promise.all(item.disks.map(async (d) => (await store.latestPoint(storeDiskName(item.id, d.name)))?.source.generation === item.generation));
      if (!written.every(Boolean)) {
        try {
          // The last cut was taken before the replica stopped ("Shut down the replica virtual machine":
          // the qemu change tracker needs QEMU running); "Fence the replica" left it off.
          await engine.drained(item.id, ctx.signal, { timeoutMs: timeouts.drainMs, onProgress: (p) => progress(ctx)(Math.floor(p / 3)) });
        } catch (err) {
          if (ctx.signal.aborted) throw err;
          deps.logger.warn({ itemId: item.id, jobId: ctx.job.id, error: (err as Error).message }, 'failback: the last changes were not all shipped by cuts; the digest compare ships them');
        }
        // The digests once more: whatever differs (a block missed, a write the tracker did not see) is shipped again.
        let checks = 0;
        for (;;) {
          const differing = await engine.compare(item, ctx.signal, timeouts.agentMs);
          if (differing === 0) break;
          if (++checks >= FINAL_CHECKS) {
            throw new LifeboatError('JOB_FAILED', `the primary machine's disks still differ from the replica's after ${FINAL_CHECKS} digest checks (${differing} blocks)`, { details: { item: item.id, blocks: differing } });
          }
          deps.logger.warn({ itemId: item.id, jobId: ctx.job.id, blocks: differing }, 'failback: blocks still differ after the last cut; shipped again');
          await engine.drained(item.id, ctx.signal, { timeoutMs: timeouts.drainMs });
        }
        progress(ctx)(66);
        // The replica's disks become the item's newest point, of the new generation (only chunks the store lacks are uploaded).
        for (const d of item.disks) {
          const disk = storeDiskName(item.id, d.name);
          if ((await store.latestPoint(disk))?.source.generation === item.generation) continue;
          const source = await compute.readDisk(id, d.name);
          try {
            const r = await backupSource(store, source, { disk, source: { generation: item.generation, lastSequence: 0 } });
            deps.logger.info({ itemId: item.id, jobId: ctx.job.id, disk, pointId: r.manifest.pointId, newChunks: r.newChunks }, 'failback: the replica disk is the newest point');
          } finally {
            await source.close();
          }
        }
      }
      progress(ctx)(100);
    },
    'Resume replication in the original direction': async (ctx) => {
      const item = await load(ctx, ['failing-back', 'initial-replication', 'protected']);
      const sinceMs = Date.now();
      if (item.state === 'failing-back') {
        const next = transition(item, 'finish-failback');
        if (!(await repos.items.updateState(item.id, item.state, next.state, { initialReplicationPercent: 0 }))) {
          throw new LifeboatError('CONFLICT', `item ${item.id} changed state during the failback`);
        }
      }
      // The vault answers `mode: replicate` at the new generation now; the agent rebuilds its digest maps from its disks first.
      if (!(await agentInMode(item, 'replicate', ctx.signal, sinceMs))) {
        deps.logger.warn({ itemId: item.id, jobId: ctx.job.id }, 'failback: the agent did not report replicate mode in time; it resumes when it next heartbeats');
      }
      const id = machineIdOf('failover', item.id);
      const row = await repos.recoveredMachines.find(id);
      if (row) {
        await repos.recoveredMachines.update(id, { state: 'deleting' });
        await compute.destroy(id);
        await repos.recoveredMachines.delete(id);
      }
      await engine.end(item.id);
    },
    'Start the primary machine': async (ctx) => {
      const item = await load(ctx, ['initial-replication', 'protected']);
      const how = await startSource(deps, item, ctx.signal);
      deps.logger.info({ itemId: item.id, jobId: ctx.job.id, how }, 'failback: the primary machine was started');
    },
  };

  return { reprotect, failback };
}
