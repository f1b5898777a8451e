import type { RecoveryDeps, VaultModule } from '../recovery/module.js';

/** Reprotect and failback: reverse replication to the primary machine (docs/recovery.md). */
export function reverseModule(_deps: RecoveryDeps): VaultModule {
  return { routes: [], handlers: {}, start: async () => {}, stop: async () => {} };
}
