import { LifeboatError } from '../../core/errors.js';
import type { RecoveryDeps, RecoveryModule, RecoveryOperations } from './module.js';

/** Test failover, failover, change point, commit, drill reports (docs/recovery.md). */
export function recoveryModule(_deps: RecoveryDeps): RecoveryModule {
  const pending = (): never => {
    throw new LifeboatError('UNSUPPORTED', 'recovery operations are not built yet');
  };
  const operations: RecoveryOperations = {
    startTestFailover: pending,
    cleanupTestFailover: pending,
    startFailover: pending,
    changeRecoveryPoint: pending,
    commit: pending,
    choosePoint: pending,
    waitForJob: pending,
  };
  return { routes: [], handlers: {}, operations, start: async () => {}, stop: async () => {} };
}
