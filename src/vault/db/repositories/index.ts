import { TimeIdSequence } from '../../../format/ids.js';
import type { Database } from '../database.js';
import { AgentRepository, EnrollmentTokenRepository, ReplicationControlRepository } from './agents.js';
import { AlertRepository } from './alerts.js';
import { AuditLogRepository } from './audit-log.js';
import type { RepoContext } from './base.js';
import { ItemRepository } from './items.js';
import { JobRepository } from './jobs.js';
import { MachineRepository, PushAccountRepository } from './machines.js';
import { PolicyRepository } from './policies.js';
import { RpoSampleRepository } from './rpo-samples.js';
import { ConfigServerRepository, ProcessServerRepository } from './servers.js';
import { SettingsRepository } from './settings.js';
import { DrillReportRepository, DrillSettingsRepository, RecoveredMachineRepository, RecoveryPlanRepository } from './recovery.js';
import { ApiTokenRepository, UserRepository } from './users.js';
import { RegistrationKeyRepository, VaultRepository } from './vaults.js';

export interface Repositories {
  readonly db: Database;
  readonly users: UserRepository;
  readonly apiTokens: ApiTokenRepository;
  readonly vaults: VaultRepository;
  readonly registrationKeys: RegistrationKeyRepository;
  readonly configServers: ConfigServerRepository;
  readonly processServers: ProcessServerRepository;
  readonly machines: MachineRepository;
  readonly pushAccounts: PushAccountRepository;
  readonly policies: PolicyRepository;
  readonly items: ItemRepository;
  readonly jobs: JobRepository;
  readonly alerts: AlertRepository;
  readonly auditLog: AuditLogRepository;
  readonly settings: SettingsRepository;
  readonly enrollmentTokens: EnrollmentTokenRepository;
  readonly agents: AgentRepository;
  readonly replicationControls: ReplicationControlRepository;
  readonly recoveredMachines: RecoveredMachineRepository;
  readonly drillReports: DrillReportRepository;
  readonly drillSettings: DrillSettingsRepository;
  readonly recoveryPlans: RecoveryPlanRepository;
  readonly rpoSamples: RpoSampleRepository;
}

export interface RepositoryOptions {
  /** Clock for createdAt/updatedAt and for ids (default: the system clock). */
  readonly now?: () => Date;
  /** Id source (default: time ids that strictly increase within this process). */
  readonly newId?: () => string;
}

/** Every repository over one (migrated) database. */
export function createRepositories(db: Database, options: RepositoryOptions = {}): Repositories {
  const now = options.now ?? (() => new Date());
  const sequence = new TimeIdSequence();
  const ctx: RepoContext = { db, now, newId: options.newId ?? (() => sequence.next(now())) };
  return {
    db,
    users: new UserRepository(ctx),
    apiTokens: new ApiTokenRepository(ctx),
    vaults: new VaultRepository(ctx),
    registrationKeys: new RegistrationKeyRepository(ctx),
    configServers: new ConfigServerRepository(ctx),
    processServers: new ProcessServerRepository(ctx),
    machines: new MachineRepository(ctx),
    pushAccounts: new PushAccountRepository(ctx),
    policies: new PolicyRepository(ctx),
    items: new ItemRepository(ctx),
    jobs: new JobRepository(ctx),
    alerts: new AlertRepository(ctx),
    auditLog: new AuditLogRepository(ctx),
    settings: new SettingsRepository(ctx),
    enrollmentTokens: new EnrollmentTokenRepository(ctx),
    agents: new AgentRepository(ctx),
    replicationControls: new ReplicationControlRepository(ctx),
    recoveredMachines: new RecoveredMachineRepository(ctx),
    drillReports: new DrillReportRepository(ctx),
    drillSettings: new DrillSettingsRepository(ctx),
    recoveryPlans: new RecoveryPlanRepository(ctx),
    rpoSamples: new RpoSampleRepository(ctx),
  };
}

export {
  AgentRepository,
  AlertRepository,
  EnrollmentTokenRepository,
  ReplicationControlRepository,
  ApiTokenRepository,
  AuditLogRepository,
  ConfigServerRepository,
  ItemRepository,
  JobRepository,
  MachineRepository,
  PolicyRepository,
  ProcessServerRepository,
  PushAccountRepository,
  RegistrationKeyRepository,
  RpoSampleRepository,
  SettingsRepository,
  UserRepository,
  VaultRepository,
};
