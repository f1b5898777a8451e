import { join } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import { currentStepIndex } from '../../core/jobs.js';
import type { DrillSettings, Job, PointChoice, RecoveryPlan, RecoveryPlanGroup } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';
import { isScriptName, resolveScript, SCRIPTS_DIR } from './scripts.js';
import { planAckKey, planRunKey, planStepName, planSteps, type PlanAck, type PlanOperation, type PlanRun } from './steps.js';

export const MAX_GROUPS = 50;
export const MAX_ITEMS_PER_GROUP = 100;
export const MAX_SCRIPTS_PER_GROUP = 20;
export const MAX_MANUAL_ACTIONS_PER_GROUP = 20;
export const MANUAL_ACTION_MAX_CHARS = 500;
export const DESCRIPTION_MAX_CHARS = 1000;
/** Scheduled drills at most once an hour, at least once a year. */
export const MAX_SCHEDULE_HOURS = 8760;
const NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]*$/;

export interface GroupInput {
  readonly name: string;
  readonly itemIds: readonly string[];
  readonly preScripts?: readonly string[];
  readonly postScripts?: readonly string[];
  readonly manualActions?: readonly string[];
}

export interface PlanInput {
  readonly vaultId: string;
  readonly name: string;
  readonly description?: string;
  readonly groups: readonly GroupInput[];
}

export type PlanPatch = Partial<Pick<PlanInput, 'name' | 'description' | 'groups'>>;

export interface OperationInput {
  readonly operation: PlanOperation;
  readonly point?: PointChoice;
  readonly shutdownSource?: boolean;
  readonly notes?: string | null;
  /** A scheduled drill: nobody acknowledges its manual actions. */
  readonly unattended?: boolean;
  readonly initiator: string;
}

const invalid = (message: string, details: Record<string, unknown> = {}): LifeboatError => new LifeboatError('VALIDATION', message, { details });

function checkName(name: string, what: string): void {
  if (name.length < 1 || name.length > 100 || !NAME.test(name)) throw invalid(`${what} ${JSON.stringify(name)} must be 1..100 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit`);
}

/** Plans: their definitions, the jobs that run them, and their drill settings. */
export class PlanService {
  readonly scriptsDir: string;

  constructor(
    private readonly repos: Repositories,
    private readonly now: () => Date,
    dataDir: string,
  ) {
    this.scriptsDir = join(dataDir, SCRIPTS_DIR);
  }

  list(filter: { vaultId?: string } = {}): Promise<RecoveryPlan[]> {
    return this.repos.recoveryPlans.list(filter.vaultId ? { vaultId: filter.vaultId } : {});
  }

  page(page: { limit: number; after?: string }, filter: { vaultId?: string } = {}): Promise<{ items: RecoveryPlan[]; nextCursor: string | null }> {
    return this.repos.recoveryPlans.page(filter.vaultId ? { vaultId: filter.vaultId } : {}, page);
  }

  get(id: string): Promise<RecoveryPlan> {
    return this.repos.recoveryPlans.get(id);
  }

  async create(input: PlanInput): Promise<RecoveryPlan> {
    await this.repos.vaults.get(input.vaultId);
    const groups = await this.validate(input.vaultId, input.name, input.description ?? '', input.groups);
    await this.uniqueName(input.vaultId, input.name, null);
    return this.repos.recoveryPlans.create({ vaultId: input.vaultId, name: input.name, description: input.description ?? '', groups });
  }

  async update(id: string, patch: PlanPatch): Promise<RecoveryPlan> {
    const plan = await this.repos.recoveryPlans.get(id);
    const name = patch.name ?? plan.name;
    const groups = await this.validate(plan.vaultId, name, patch.description ?? plan.description, patch.groups ?? plan.groups);
    if (name !== plan.name) await this.uniqueName(plan.vaultId, name, id);
    return this.repos.recoveryPlans.update(id, {
      name,
      groups,
      ...(patch.description === undefined ? {} : { description: patch.description }),
    });
  }

  /** Refused while a job of the plan is queued or running; its drill settings and alert go with it. */
  async delete(id: string): Promise<void> {
    const plan = await this.repos.recoveryPlans.get(id);
    const job = await this.activeJob(id);
    if (job) throw new LifeboatError('CONFLICT', `plan ${plan.name} has job ${job.id} ${job.state}; wait for it to end`, { details: { planId: id, jobId: job.id } });
    if (await this.repos.drillSettings.find(id)) await this.repos.drillSettings.delete(id);
    await this.repos.alerts.clear('drill-failed', id);
    await this.repos.recoveryPlans.delete(id);
  }

  /** The plan's job that is queued or running, if any. */
  async activeJob(planId: string): Promise<Job | undefined> {
    for (const state of ['running', 'queued'] as const) {
      for (const job of await this.repos.jobs.list({ kind: 'recovery-plan', state })) {
        if ((await this.repos.settings.get<PlanRun>(planRunKey(job.id)))?.planId === planId) return job;
      }
    }
    return undefined;
  }

  /** What a plan's job runs (NOT_FOUND for a job that is not a plan's). */
  async run(jobId: string): Promise<PlanRun> {
    const run = await this.repos.settings.get<PlanRun>(planRunKey(jobId));
    if (!run) throw new LifeboatError('NOT_FOUND', `job ${jobId} is not a recovery plan's job`, { details: { jobId } });
    return run;
  }

  /**
   * Queues one `recovery-plan` job for the operation, its steps built from the
   * plan's groups. Refused while another job of the plan is queued or running, and
   * when a script the plan names is not (yet) an executable in the scripts directory.
   */
  async start(planId: string, input: OperationInput): Promise<Job> {
    const plan = await this.repos.recoveryPlans.get(planId);
    const busy = await this.activeJob(planId);
    if (busy) throw new LifeboatError('CONFLICT', `plan ${plan.name} has job ${busy.id} ${busy.state}; wait for it to end`, { details: { planId, jobId: busy.id } });
    const steps = planSteps(plan, input.operation);
    for (const step of steps) if (step.kind === 'pre-script' || step.kind === 'post-script') await resolveScript(this.scriptsDir, step.script);
    const run: PlanRun = {
      planId,
      planName: plan.name,
      operation: input.operation,
      point: input.operation === 'cleanup-test-failover' ? null : (input.point ?? { kind: 'latest-processed' }),
      shutdownSource: input.operation === 'failover' && input.shutdownSource === true,
      notes: input.notes ?? null,
      unattended: input.unattended === true,
      initiator: input.initiator,
      steps,
    };
    // One transaction: the runner never sees the job without what it runs.
    return this.repos.db.transaction(async () => {
      const job = await this.repos.jobs.create({
        kind: 'recovery-plan',
        itemId: null,
        initiator: input.initiator,
        steps: steps.map((st) => planStepName(st, input.operation)),
      });
      await this.repos.settings.set(planRunKey(job.id), run);
      return job;
    });
  }

  /**
   * Acknowledges the manual action of step `step` (0-based) of a plan's job: CONFLICT
   * unless that step is a manual action that is running now. Stored in the database,
   * so it survives a restart of the vault.
   */
  async acknowledge(jobId: string, step: number, by: string): Promise<Job> {
    const job = await this.repos.jobs.get(jobId);
    const run = job.kind === 'recovery-plan' ? await this.repos.settings.get<PlanRun>(planRunKey(jobId)) : undefined;
    const target = run?.steps[step];
    if (!run || target?.kind !== 'manual' || job.state !== 'running' || currentStepIndex(job) !== step) {
      throw new LifeboatError('CONFLICT', `step ${step} of job ${jobId} is not a manual action waiting for acknowledgement`, {
        details: { jobId, step, state: job.state, runningStep: currentStepIndex(job) },
      });
    }
    const ack: PlanAck = { by, at: this.now().toISOString() };
    await this.repos.settings.set(planAckKey(jobId, step), ack);
    return job;
  }

  /** A plan's drill settings (defaults when none were set). */
  async drillSettings(planId: string): Promise<DrillSettings> {
    await this.repos.recoveryPlans.get(planId);
    return (await this.repos.drillSettings.find(planId)) ?? defaultPlanDrillSettings(planId, this.now());
  }

  /** Sets the schedule: the first drill runs `scheduleEveryHours` from now; null stops scheduled drills. */
  async putDrillSettings(planId: string, input: { scheduleEveryHours: number | null }): Promise<DrillSettings> {
    await this.repos.recoveryPlans.get(planId);
    const hours = input.scheduleEveryHours;
    if (hours !== null && (!Number.isInteger(hours) || hours < 1 || hours > MAX_SCHEDULE_HOURS)) throw invalid(`scheduleEveryHours must be 1..${MAX_SCHEDULE_HOURS} or null`);
    const current = (await this.repos.drillSettings.find(planId)) ?? defaultPlanDrillSettings(planId, this.now());
    const nextRunAt = hours === null ? null : new Date(this.now().getTime() + hours * 3600_000).toISOString();
    const { updatedAt: _updatedAt, ...rest } = current;
    return this.repos.drillSettings.put({ ...rest, subjectKind: 'plan', scheduleEveryHours: hours, nextRunAt });
  }

  private async uniqueName(vaultId: string, name: string, self: string | null): Promise<void> {
    const same = (await this.repos.recoveryPlans.list({ vaultId, name })).find((p) => p.id !== self);
    if (same) throw new LifeboatError('CONFLICT', `vault ${vaultId} already has a plan named ${name}`, { details: { planId: same.id } });
  }

  private async validate(vaultId: string, name: string, description: string, groups: readonly GroupInput[]): Promise<RecoveryPlanGroup[]> {
    checkName(name, 'plan name');
    if (description.length > DESCRIPTION_MAX_CHARS) throw invalid(`the description is longer than ${DESCRIPTION_MAX_CHARS} characters`);
    if (groups.length === 0 || groups.length > MAX_GROUPS) throw invalid(`a plan needs 1..${MAX_GROUPS} groups`);
    const groupNames = new Set<string>();
    const seen = new Map<string, string>();
    const out: RecoveryPlanGroup[] = [];
    for (const g of groups) {
      checkName(g.name, 'group name');
      if (groupNames.has(g.name)) throw invalid(`group ${g.name} appears twice`, { group: g.name });
      groupNames.add(g.name);
      if (g.itemIds.length === 0 || g.itemIds.length > MAX_ITEMS_PER_GROUP) throw invalid(`group ${g.name} needs 1..${MAX_ITEMS_PER_GROUP} items`, { group: g.name });
      for (const itemId of g.itemIds) {
        const other = seen.get(itemId);
        if (other !== undefined) throw invalid(`item ${itemId} appears more than once in the plan (groups ${other} and ${g.name})`, { itemId });
        seen.set(itemId, g.name);
        const item = await this.repos.items.find(itemId);
        if (!item || item.vaultId !== vaultId) throw invalid(`item ${itemId} of group ${g.name} is not a replicated item of the plan's vault`, { itemId, group: g.name });
      }
      const preScripts = [...(g.preScripts ?? [])];
      const postScripts = [...(g.postScripts ?? [])];
      const manualActions = [...(g.manualActions ?? [])];
      if (preScripts.length > MAX_SCRIPTS_PER_GROUP || postScripts.length > MAX_SCRIPTS_PER_GROUP) throw invalid(`group ${g.name} has more than ${MAX_SCRIPTS_PER_GROUP} pre- or post-scripts`);
      for (const script of [...preScripts, ...postScripts]) {
        if (!isScriptName(script)) throw invalid(`script name ${JSON.stringify(script)} of group ${g.name} must be a plain file name ([A-Za-z0-9._-]+) in the vault's scripts directory`, { script });
      }
      if (manualActions.length > MAX_MANUAL_ACTIONS_PER_GROUP) throw invalid(`group ${g.name} has more than ${MAX_MANUAL_ACTIONS_PER_GROUP} manual actions`);
      for (const text of manualActions) {
        if (text.trim().length === 0 || text.length > MANUAL_ACTION_MAX_CHARS) throw invalid(`a manual action of group ${g.name} must be 1..${MANUAL_ACTION_MAX_CHARS} characters`);
      }
      out.push({ name: g.name, itemIds: [...g.itemIds], preScripts, postScripts, manualActions });
    }
    return out;
  }
}

export function defaultPlanDrillSettings(planId: string, now: Date): DrillSettings {
  return {
    id: planId,
    subjectKind: 'plan',
    probes: [],
    bootMarker: null,
    bootTimeoutSeconds: 600,
    scheduleEveryHours: null,
    nextRunAt: null,
    lastRunAt: null,
    updatedAt: now.toISOString(),
  };
}
