import type { ComputeDriver } from '../../compute/driver.js';
import type { ChosenPoint, DrillReport, DrillTrigger, Job, PointChoice, ReplicatedItem } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';
import type { RouteModule } from '../http/types.js';
import type { StepHandlers } from '../jobs/runner.js';
import type { VaultLogger } from '../logging/logger.js';
import type { ReplicaProcessor } from '../replica/processor.js';
import type { AgentService } from '../services/agents.js';
import type { VaultStores } from '../services/vault-stores.js';

/**
 * What the vault's recovery parts (src/vault/recovery: test failover, failover,
 * change point, commit; src/vault/plans: recovery plans and scheduled drills;
 * src/vault/reverse: reprotect and failback) are built from, and the one shape
 * each of them gives back to src/vault/server.ts.
 */
export interface RecoveryDeps {
  readonly repos: Repositories;
  readonly stores: VaultStores;
  readonly replica: ReplicaProcessor;
  readonly agents: AgentService;
  readonly compute: ComputeDriver;
  readonly now: () => Date;
  readonly logger: VaultLogger;
  /** The vault's data directory (0700): e.g. `scripts/` for recovery-plan scripts. */
  readonly dataDir: string;
}

export interface VaultModule {
  readonly routes: readonly RouteModule[];
  readonly handlers: StepHandlers;
  /** Background work (schedules, reverse replication loops, re-serving recovered machines after a restart). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface TestFailoverInput {
  readonly point: PointChoice;
  /** Default: the isolated network. */
  readonly network?: 'isolated' | 'none';
  readonly trigger?: DrillTrigger;
  readonly planId?: string | null;
  readonly initiator: string;
}

/**
 * The operations on one replicated item, as the API, the CLI, recovery plans and
 * scheduled drills start them. Each checks the item's state (src/core/item-state.ts),
 * changes it and queues the job(s) in one transaction, and returns the job that
 * does the work (for a failover from a drill: the failover job; its cleanup job runs first).
 */
export interface RecoveryOperations {
  startTestFailover(itemId: string, input: TestFailoverInput): Promise<{ job: Job; report: DrillReport }>;
  cleanupTestFailover(itemId: string, input: { notes: string | null; initiator: string }): Promise<Job>;
  startFailover(itemId: string, input: { point: PointChoice; shutdownSource: boolean; initiator: string; planId?: string | null }): Promise<Job>;
  changeRecoveryPoint(itemId: string, input: { point: PointChoice; initiator: string }): Promise<Job>;
  commit(itemId: string, input: { initiator: string }): Promise<Job>;
  /** Resolves the choice to one point per disk (for `latest`, after processing everything pending). */
  choosePoint(item: ReplicatedItem, choice: PointChoice): Promise<ChosenPoint>;
  /** Resolves when the job ended (any state); rejects on abort. */
  waitForJob(jobId: string, signal?: AbortSignal): Promise<Job>;
}

export interface RecoveryModule extends VaultModule {
  readonly operations: RecoveryOperations;
}
