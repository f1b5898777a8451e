import { asLifeboatError } from '../../core/errors.js';
import type { RecoveryDeps } from '../recovery/module.js';
import { sleep } from '../../core/sleep.js';
import type { ReverseEngine } from './engine.js';

/**
 * Continuous reverse replication (docs/recovery.md): per reprotected item, a loop that
 * cuts the replica's change tracker every policy interval and queues the changed
 * blocks for the agent. Started by reprotect's last step and, at every vault start,
 * for each item that is `reprotected`; stopped by failback's "Fence the replica" (it
 * returns once the cut under way is queued) and at vault stop. A tracker that lost
 * continuity (a vault or compute restart) makes the next round a digest compare.
 */
export class ReverseLoops {
  private readonly running = new Map<string, { controller: AbortController; done: Promise<void> }>();

  constructor(
    private readonly deps: RecoveryDeps,
    private readonly engine: ReverseEngine,
    private readonly options: { digestTimeoutMs: number },
  ) {}

  /** Starts the item's loop unless it runs. */
  start(itemId: string): void {
    if (this.running.has(itemId)) return;
    const controller = new AbortController();
    const done = this.run(itemId, controller.signal);
    this.running.set(itemId, { controller, done });
  }

  /** Stops the item's loop and waits for its round under way. */
  async stop(itemId: string): Promise<void> {
    const r = this.running.get(itemId);
    if (!r) return;
    r.controller.abort();
    await r.done;
    this.running.delete(itemId);
  }

  async stopAll(): Promise<void> {
    for (const id of [...this.running.keys()]) await this.stop(id);
  }

  isRunning(itemId: string): boolean {
    return this.running.has(itemId);
  }

  private async run(itemId: string, signal: AbortSignal): Promise<void> {
    let compareNeeded = false;
    while (!signal.aborted) {
      let intervalMs = 30_000;
      try {
        const item = await this.deps.repos.items.get(itemId);
        if (item.state !== 'reprotected') break;
        intervalMs = (await this.deps.repos.policies.get(item.policyId)).crashConsistentFrequencySeconds * 1000;
        const cut = await this.engine.cutChanges(item);
        if (cut.lost || compareNeeded) {
          compareNeeded = true;
          const blocks = await this.engine.compare(item, signal, this.options.digestTimeoutMs);
          compareNeeded = false;
          this.deps.logger.info({ itemId, blocks }, 'reverse replication: digest compare after the replica tracker lost continuity');
        }
      } catch (err) {
        if (signal.aborted) break;
        const e = asLifeboatError(err, 'INTERNAL');
        this.deps.logger.warn({ itemId, code: e.code, err: e.message }, 'reverse replication: a round failed; trying again');
      }
      await sleep(intervalMs, signal);
    }
  }
}
