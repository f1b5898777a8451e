import type { RecoveryDeps, RecoveryOperations, VaultModule } from '../recovery/module.js';

/** Recovery plans and scheduled drills (docs/recovery.md). */
export function plansModule(_deps: RecoveryDeps & { readonly operations: RecoveryOperations }): VaultModule {
  return { routes: [], handlers: {}, start: async () => {}, stop: async () => {} };
}
