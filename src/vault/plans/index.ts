import { mkdir } from 'node:fs/promises';
import { plansRoutes } from '../http/routes/plans.js';
import type { RecoveryDeps, RecoveryOperations, VaultModule } from '../recovery/module.js';
import { planStepHandler } from './handler.js';
import { DrillScheduler } from './scheduler.js';
import { DEFAULT_SCRIPT_TIMEOUT_MS } from './scripts.js';
import { PlanService } from './service.js';

export interface PlansOptions {
  /** How often due drills are looked for; default 30 s. */
  readonly drillIntervalMs?: number;
  /** How long a plan's script may run; default 10 minutes. */
  readonly scriptTimeoutMs?: number;
  /** How often a manual action looks for its acknowledgement; default 500 ms. */
  readonly ackPollMs?: number;
}

export interface PlansModule extends VaultModule {
  readonly service: PlanService;
  readonly scheduler: DrillScheduler;
}

/** Recovery plans and scheduled drills (docs/recovery.md). */
export function plansModule(deps: RecoveryDeps & { readonly operations: RecoveryOperations }, options: PlansOptions = {}): PlansModule {
  const service = new PlanService(deps.repos, deps.now, deps.dataDir);
  const scheduler = new DrillScheduler({
    repos: deps.repos,
    operations: deps.operations,
    plans: service,
    now: deps.now,
    logger: deps.logger,
    ...(options.drillIntervalMs === undefined ? {} : { intervalMs: options.drillIntervalMs }),
  });
  const handler = planStepHandler({
    service,
    operations: deps.operations,
    scriptTimeoutMs: options.scriptTimeoutMs ?? DEFAULT_SCRIPT_TIMEOUT_MS,
    ackPollMs: options.ackPollMs ?? 500,
  });
  return {
    service,
    scheduler,
    routes: [plansRoutes(service)],
    handlers: { 'recovery-plan': { '*': handler } },
    start: async () => {
      // Where the administrator puts the plans' scripts (the vault's data directory is 0700 too).
      await mkdir(service.scriptsDir, { recursive: true, mode: 0o700 });
      scheduler.start();
    },
    stop: () => scheduler.stop(),
  };
}
