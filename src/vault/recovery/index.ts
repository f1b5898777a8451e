import { recoveryRoutes } from '../http/routes/recovery.js';
import { recoveryHandlers } from './handlers.js';
import { MachineSources } from './machines.js';
import type { RecoveryDeps, RecoveryModule } from './module.js';
import { Operations } from './operations.js';
import { RecoveryReads } from './service.js';

/**
 * Test failover, its cleanup, failover, change of recovery point, commit and drill
 * reports (docs/recovery.md). Its start serves the recovered machines a previous
 * vault process left running their recovery points again, before any job resumes.
 */
export function recoveryModule(deps: RecoveryDeps): RecoveryModule {
  const operations = new Operations(deps);
  const sources = new MachineSources(deps);
  return {
    routes: [recoveryRoutes(operations, new RecoveryReads(deps.repos, deps.now))],
    handlers: recoveryHandlers(deps, operations, sources),
    operations,
    start: async () => {
      const adopted = await sources.adoptAll();
      if (adopted.length > 0) deps.logger.info({ machines: adopted }, 'recovered machines served their recovery points again');
    },
    stop: () => sources.closeAll(),
  };
}
