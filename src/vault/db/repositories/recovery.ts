import type { DrillReport, DrillSettings, RecoveredMachine, RecoveryPlan } from '../../../core/model.js';
import { Repository, type RepoContext } from './base.js';

/** Machines the compute drivers made for items (test failover, failover); one row per machine. */
export class RecoveredMachineRepository extends Repository<RecoveredMachine> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'recovered_machines',
      noun: 'recovered machine',
      columns: {
        id: 'text',
        itemId: 'text',
        purpose: 'text',
        driver: 'text',
        point: 'json',
        network: 'text',
        state: 'text',
        jobId: 'text',
        createdAt: 'text',
        updatedAt: 'text',
      },
    });
  }

  /** `id` is the compute driver's machine id. */
  create(input: Omit<RecoveredMachine, 'createdAt' | 'updatedAt'>): Promise<RecoveredMachine> {
    const at = this.nowIso();
    return this.table.insert({ ...input, createdAt: at, updatedAt: at });
  }

  listByItem(itemId: string): Promise<RecoveredMachine[]> {
    return this.table.list({ itemId });
  }

  list(where: Partial<RecoveredMachine> = {}): Promise<RecoveredMachine[]> {
    return this.table.list(where);
  }

  update(id: string, patch: Partial<Pick<RecoveredMachine, 'state' | 'point' | 'jobId'>>): Promise<RecoveredMachine> {
    return this.table.update(id, { ...patch, updatedAt: this.nowIso() });
  }
}

/** Drill reports: created when a test failover (or failover) starts, completed by it and by its cleanup. */
export class DrillReportRepository extends Repository<DrillReport> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'drill_reports',
      noun: 'drill report',
      columns: {
        id: 'text',
        itemId: 'text',
        planId: 'text',
        operation: 'text',
        trigger: 'text',
        jobId: 'text',
        cleanupJobId: 'text',
        outcome: 'text',
        point: 'json',
        rpoSeconds: 'int',
        rtoSeconds: 'int',
        driver: 'text',
        network: 'text',
        machineId: 'text',
        accel: 'text',
        probes: 'json',
        consoleLog: 'text',
        error: 'text',
        notes: 'text',
        startedAt: 'text',
        endedAt: 'text',
      },
    });
  }

  create(input: Omit<DrillReport, 'id'>): Promise<DrillReport> {
    return this.table.insert({ ...input, id: this.ctx.newId() });
  }

  update(id: string, patch: Partial<Omit<DrillReport, 'id' | 'itemId' | 'jobId'>>): Promise<DrillReport> {
    return this.table.update(id, patch);
  }

  findByJob(jobId: string): Promise<DrillReport | undefined> {
    return this.table.list({ jobId }).then((rows) => rows[0]);
  }

  /** Newest first. */
  async listByItem(itemId: string, limit = 50): Promise<DrillReport[]> {
    return (await this.table.list({ itemId })).reverse().slice(0, limit);
  }
}

/** Drill settings of items and plans, keyed by the item or plan id. */
export class DrillSettingsRepository extends Repository<DrillSettings> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'drill_settings',
      noun: 'drill settings',
      columns: {
        id: 'text',
        subjectKind: 'text',
        probes: 'json',
        bootMarker: 'text',
        bootTimeoutSeconds: 'int',
        scheduleEveryHours: 'int',
        nextRunAt: 'text',
        lastRunAt: 'text',
        updatedAt: 'text',
      },
    });
  }

  /** Creates or replaces the settings of one item or plan. */
  async put(input: Omit<DrillSettings, 'updatedAt'>): Promise<DrillSettings> {
    const value: DrillSettings = { ...input, updatedAt: this.nowIso() };
    if (await this.table.find(input.id)) return this.table.update(input.id, value);
    return this.table.insert(value);
  }

  /** Settings whose scheduled drill is due at `now`. */
  due(now: Date): Promise<DrillSettings[]> {
    return this.table.list({}, { extraWhere: 'next_run_at IS NOT NULL AND next_run_at <= ?', extraParams: [now.toISOString()] });
  }

  update(id: string, patch: Partial<Pick<DrillSettings, 'nextRunAt' | 'lastRunAt'>>): Promise<DrillSettings> {
    return this.table.update(id, { ...patch, updatedAt: this.nowIso() });
  }
}

/** Recovery plans: ordered groups of items; names unique per vault. */
export class RecoveryPlanRepository extends Repository<RecoveryPlan> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'recovery_plans',
      noun: 'recovery plan',
      columns: { id: 'text', vaultId: 'text', name: 'text', description: 'text', groups: 'json', createdAt: 'text', updatedAt: 'text' },
    });
  }

  create(input: Pick<RecoveryPlan, 'vaultId' | 'name' | 'description' | 'groups'>): Promise<RecoveryPlan> {
    const at = this.nowIso();
    return this.table.insert({ ...input, id: this.ctx.newId(), createdAt: at, updatedAt: at });
  }

  update(id: string, patch: Partial<Pick<RecoveryPlan, 'name' | 'description' | 'groups'>>): Promise<RecoveryPlan> {
    return this.table.update(id, { ...patch, updatedAt: this.nowIso() });
  }

  list(where: Partial<RecoveryPlan> = {}): Promise<RecoveryPlan[]> {
    return this.table.list(where);
  }
}
