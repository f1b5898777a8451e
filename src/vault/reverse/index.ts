import type { RecoveryDeps, VaultModule } from '../recovery/module.js';
import { ReverseEngine } from './engine.js';
import { DEFAULT_TIMEOUTS, reverseHandlers, type ReverseTimeouts } from './handlers.js';
import { ReverseLoops } from './loop.js';
import { reverseRoutes } from './routes.js';

/**
 * Reprotect and failback: reverse replication to the primary machine (docs/recovery.md,
 * "Reprotect and failback"). The engine keeps each item's queue of blocks for the
 * agent; the loops cut the replica's changes while an item is reprotected; the
 * handlers run the two jobs; the routes start them and serve the agent.
 */
export function reverseModule(deps: RecoveryDeps, options: { timeouts?: Partial<ReverseTimeouts> } = {}): VaultModule {
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  const engine = new ReverseEngine(deps);
  const loops = new ReverseLoops(deps, engine, { digestTimeoutMs: timeouts.agentMs });
  return {
    routes: [reverseRoutes(deps, engine)],
    handlers: reverseHandlers(deps, engine, loops, timeouts),
    start: async () => {
      // Reverse replication survives a restart: every reprotected item's loop starts again.
      for (const item of await deps.repos.items.list({ state: 'reprotected' })) loops.start(item.id);
    },
    stop: async () => {
      await loops.stopAll();
      await engine.closeAll();
    },
  };
}
