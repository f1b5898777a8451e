import { LifeboatError } from '../../core/errors.js';
import { transition, type ItemAction } from '../../core/item-state.js';
import { JOB_KINDS } from '../../core/jobs.js';
import type { ChosenPoint, DrillReport, Job, JobKind, PointChoice, ReplicatedItem } from '../../core/model.js';
import { ENDED_JOB_STATES } from '../jobs/job-store.js';
import { REPLICATING_STATES } from '../replica/processor.js';
import { machineIdOf, networkName, networkOf } from './machines.js';
import type { RecoveryDeps, RecoveryOperations, TestFailoverInput } from './module.js';
import { resolvePoint } from './points.js';

/**
 * What an operation's job needs beyond its item, kept under `job-params:<jobId>` in
 * the settings table so that a step run again after a vault restart sees the same
 * choice (and, once resolved, the same points).
 */
export interface JobParams {
  readonly point?: PointChoice;
  /** Resolved at the request (every choice but `latest`) or by "Process data up to the recovery point". */
  readonly chosen?: ChosenPoint | null;
  readonly notes?: string | null;
  readonly shutdownSource?: boolean;
  /** Test failover: where the test machine is plugged. */
  readonly network?: 'isolated' | 'none';
  /** Test failover: its drill report. */
  readonly reportId?: string;
  /** Test failover: when the machine started (the RTO's end when nothing else says "booted"). */
  readonly startedAtMs?: number;
}

export function jobParamsKey(jobId: string): string {
  return `job-params:${jobId}`;
}

const WAIT_POLL_MS = 200;

/**
 * The recovery operations (src/vault/recovery/module.ts RecoveryOperations): each
 * checks the item's state through src/core/item-state.ts, and changes it, queues the
 * job(s) the transition names, records their parameters (and the drill report) in
 * one transaction. A choice of point other than `latest` is resolved before, so a
 * request for a point that does not exist is refused (NOT_FOUND) with nothing changed.
 */
export class Operations implements RecoveryOperations {
  constructor(private readonly deps: RecoveryDeps) {}

  async startTestFailover(itemId: string, input: TestFailoverInput): Promise<{ job: Job; report: DrillReport }> {
    const item = await this.deps.repos.items.get(itemId);
    transition(item, 'start-test-failover');
    const chosen = await this.chooseAtRequest(item, input.point);
    const network = input.network ?? 'isolated';
    return this.apply(item, 'start-test-failover', input.initiator, async (jobs) => {
      const job = jobs.get('test-failover') as Job;
      const report = await this.newReport(item, job, {
        operation: 'test-failover',
        trigger: input.trigger ?? 'operator',
        planId: input.planId ?? null,
        point: chosen,
        network,
        machineId: machineIdOf('test', item.id),
      });
      await this.setParams(job.id, { point: input.point, chosen, network, reportId: report.id });
      return { job, report };
    });
  }

  async cleanupTestFailover(itemId: string, input: { notes: string | null; initiator: string }): Promise<Job> {
    const item = await this.deps.repos.items.get(itemId);
    return this.apply(item, 'cleanup-test-failover', input.initiator, async (jobs) => {
      const job = jobs.get('cleanup-test-failover') as Job;
      await this.linkCleanup(item.id, job.id, input.notes);
      return job;
    });
  }

  async startFailover(itemId: string, input: { point: PointChoice; shutdownSource: boolean; initiator: string; planId?: string | null }): Promise<Job> {
    const item = await this.deps.repos.items.get(itemId);
    // A failover that failed is run again, never undone: the source is fenced already.
    const action = item.state === 'failing-over' ? 'retry-failover' : 'start-failover';
    transition(item, action);
    if (action === 'retry-failover') {
      const open = (await this.deps.repos.jobs.list({ itemId: item.id, kind: 'failover' })).filter((j) => !ENDED_JOB_STATES.includes(j.state));
      if (open.length > 0) {
        throw new LifeboatError('ILLEGAL_TRANSITION', `a failover of item ${item.id} is still ${open[0]!.state} (job ${open[0]!.id}); wait for it`, {
          details: { item: item.id, job: open[0]!.id },
        });
      }
    }
    const network = networkName(networkOf(item.compute.network));
    const chosen = await this.chooseAtRequest(item, input.point);
    return this.apply(item, action, input.initiator, async (jobs) => {
      const cleanup = jobs.get('cleanup-test-failover');
      // From a drill: its cleanup was queued first, so it runs before the replica machine is made.
      if (cleanup) await this.linkCleanup(item.id, cleanup.id, null);
      const job = jobs.get('failover') as Job;
      // The failover's report: its point, RPO, the time to the replica's start.
      const report = await this.newReport(item, job, {
        operation: 'failover',
        trigger: input.planId ? 'plan' : 'operator',
        planId: input.planId ?? null,
        point: chosen,
        network,
        machineId: machineIdOf('failover', item.id),
      });
      await this.setParams(job.id, { point: input.point, chosen, shutdownSource: input.shutdownSource, reportId: report.id });
      return job;
    });
  }

  async changeRecoveryPoint(itemId: string, input: { point: PointChoice; initiator: string }): Promise<Job> {
    const item = await this.deps.repos.items.get(itemId);
    transition(item, 'change-recovery-point');
    // After a failover nothing more arrives (the source is fenced): `latest` is the newest point made.
    const chosen = await this.choosePoint(item, input.point);
    return this.apply(item, 'change-recovery-point', input.initiator, async (jobs) => {
      const job = jobs.get('change-recovery-point') as Job;
      await this.setParams(job.id, { point: input.point, chosen });
      return job;
    });
  }

  async commit(itemId: string, input: { initiator: string }): Promise<Job> {
    const item = await this.deps.repos.items.get(itemId);
    transition(item, 'commit');
    if (!(await this.deps.repos.recoveredMachines.find(machineIdOf('failover', item.id)))) {
      throw new LifeboatError('NOT_FOUND', `item ${item.id} has no replica machine to commit`, { details: { item: item.id } });
    }
    return this.apply(item, 'commit', input.initiator, async (jobs) => jobs.get('commit') as Job);
  }

  async choosePoint(item: ReplicatedItem, choice: PointChoice): Promise<ChosenPoint> {
    if (choice.kind === 'latest') {
      // Everything already at the process server and in the store becomes points first.
      if (REPLICATING_STATES.includes(item.state)) await this.deps.replica.processNow(item.id);
      else if (item.state === 'failing-over') await this.deps.replica.processNow(item.id, { duringFailover: true });
    }
    return resolvePoint(await this.deps.stores.openVaultStore(item.vaultId), item, choice);
  }

  async waitForJob(jobId: string, signal?: AbortSignal): Promise<Job> {
    for (;;) {
      const job = await this.deps.repos.jobs.get(jobId);
      if (ENDED_JOB_STATES.includes(job.state)) return job;
      if (signal?.aborted) throw new LifeboatError('TIMEOUT', `stopped waiting for job ${jobId}, which is ${job.state}`, { details: { jobId } });
      await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
    }
  }

  async params(jobId: string): Promise<JobParams> {
    return (await this.deps.repos.settings.get<JobParams>(jobParamsKey(jobId))) ?? {};
  }

  async setParams(jobId: string, patch: JobParams): Promise<void> {
    await this.deps.repos.settings.set(jobParamsKey(jobId), { ...(await this.params(jobId)), ...patch });
  }

  private newReport(
    item: ReplicatedItem,
    job: Job,
    fields: Pick<DrillReport, 'operation' | 'trigger' | 'planId' | 'point' | 'network' | 'machineId'>,
  ): Promise<DrillReport> {
    return this.deps.repos.drillReports.create({
      ...fields,
      itemId: item.id,
      jobId: job.id,
      cleanupJobId: null,
      outcome: 'running',
      rpoSeconds: null,
      rtoSeconds: null,
      driver: this.deps.compute.name,
      accel: null,
      probes: [],
      consoleLog: '',
      error: null,
      notes: null,
      startedAt: this.deps.now().toISOString(),
      endedAt: null,
    });
  }

  private async chooseAtRequest(item: ReplicatedItem, choice: PointChoice): Promise<ChosenPoint | null> {
    return choice.kind === 'latest' ? null : this.choosePoint(item, choice);
  }

  /** The drill the cleanup ends: its report names the cleanup job, which records the notes. */
  private async linkCleanup(itemId: string, cleanupJobId: string, notes: string | null): Promise<void> {
    const report = (await this.deps.repos.drillReports.listByItem(itemId)).find((r) => r.operation === 'test-failover' && r.cleanupJobId === null);
    if (report) await this.deps.repos.drillReports.update(report.id, { cleanupJobId });
    await this.setParams(cleanupJobId, { notes, ...(report ? { reportId: report.id } : {}) });
  }

  /** The transition, its jobs and `record` in one transaction; CONFLICT when the item changed meanwhile. */
  private async apply<T>(item: ReplicatedItem, action: ItemAction, initiator: string, record: (jobs: Map<JobKind, Job>) => Promise<T>): Promise<T> {
    const { repos } = this.deps;
    const next = transition(item, action);
    return repos.db.transaction(async () => {
      if (!(await repos.items.updateState(item.id, item.state, next.state, { generation: next.generation }))) {
        throw new LifeboatError('CONFLICT', `item ${item.id} changed state while ${action} was starting; try again`, { details: { item: item.id, action } });
      }
      const jobs = new Map<JobKind, Job>();
      for (const kind of next.jobs) {
        jobs.set(kind, await repos.jobs.create({ kind, itemId: item.id, initiator, steps: JOB_KINDS[kind].steps.map((s) => s.name) }));
      }
      return record(jobs);
    });
  }
}
