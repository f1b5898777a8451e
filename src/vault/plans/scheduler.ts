import { asLifeboatError, isLifeboatError } from '../../core/errors.js';
import type { DrillSettings, Job } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';
import type { VaultLogger } from '../logging/logger.js';
import type { RecoveryOperations } from '../recovery/module.js';
import type { PlanService } from './service.js';
import { planStepKey } from './steps.js';

/** How often due drills are looked for; default 30 s. */
export const DRILL_INTERVAL_MS = 30_000;
/** An item busy with something else (an operator's drill) is tried again this much later. */
export const DRILL_RETRY_MS = 10 * 60_000;
/** Who the jobs of scheduled drills say started them. */
export const SCHEDULER_INITIATOR = 'scheduler';
const NOTES = 'scheduled drill';

/** A scheduled drill under way, stored so a restart of the vault finishes it (and cleans up) instead of starting another. */
interface DrillRun {
  readonly testJobId: string;
  readonly reportId: string | null;
}
const drillRunKey = (subjectId: string): string => `drill-run:${subjectId}`;

export interface DrillSchedulerOptions {
  readonly repos: Repositories;
  readonly operations: RecoveryOperations;
  readonly plans: PlanService;
  readonly now: () => Date;
  readonly logger: VaultLogger;
  readonly intervalMs?: number;
}

/**
 * Runs due drills unattended (docs/recovery.md, "Drill reports and scheduled
 * drills"): an item's test failover at the newest processed point, or a plan's
 * test failover job; then always the cleanup, then the verdict: a failed drill
 * raises `drill-failed` on the item or plan, a passing one clears it. An item
 * that is not protected right now (an operator's drill runs) is left alone and
 * tried again 10 minutes later; a drill that could not start is a failed drill.
 */
export class DrillScheduler {
  private readonly intervalMs: number;
  private readonly abort = new AbortController();
  private readonly inFlight = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly options: DrillSchedulerOptions) {
    this.intervalMs = options.intervalMs ?? DRILL_INTERVAL_MS;
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    const all = Promise.all([this.ticking, ...this.inFlight.values()].map((p) => p.catch(() => undefined)));
    await Promise.race([all, new Promise((r) => setTimeout(r, 2000).unref())]);
  }

  /** Starts every due drill not already running; resolves once they are started (not ended). */
  async tick(): Promise<void> {
    const { repos, now, logger } = this.options;
    for (const settings of await repos.drillSettings.due(now())) {
      if (this.stopped) return;
      if (this.inFlight.has(settings.id) || settings.scheduleEveryHours === null) continue;
      const drill = (settings.subjectKind === 'plan' ? this.drillPlan(settings) : this.drillItem(settings))
        .catch((err: unknown) => {
          if (!this.stopped) logger.error({ err, subjectId: settings.id }, 'scheduled drill failed to run');
        })
        .finally(() => this.inFlight.delete(settings.id));
      this.inFlight.set(settings.id, drill);
    }
  }

  /** Resolves when the drills running now have ended (tests). */
  async idle(): Promise<void> {
    await Promise.all([...this.inFlight.values()]);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.ticking = this.tick()
        .catch((err: unknown) => {
          if (!this.stopped) this.options.logger.error({ err }, 'looking for due drills failed');
        })
        .finally(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }

  private async later(settings: DrillSettings, ms: number, ran: Date | null): Promise<void> {
    await this.options.repos.drillSettings.update(settings.id, {
      nextRunAt: new Date(this.options.now().getTime() + ms).toISOString(),
      ...(ran ? { lastRunAt: ran.toISOString() } : {}),
    });
  }

  private async wait(jobId: string): Promise<Job> {
    return this.options.operations.waitForJob(jobId, this.abort.signal);
  }

  private async verdict(settings: DrillSettings, what: string, failure: string | null, ran: Date): Promise<void> {
    const { repos, logger } = this.options;
    if (this.stopped) return; // unfinished: the next start finishes it from the stored drill run
    if (failure === null) {
      await repos.alerts.clear('drill-failed', settings.id);
      logger.info({ subjectId: settings.id }, 'scheduled drill passed');
    } else {
      await repos.alerts.raise({ kind: 'drill-failed', subjectId: settings.id, severity: 'critical', message: `scheduled drill of ${what} failed: ${failure}` });
      logger.warn({ subjectId: settings.id }, 'scheduled drill failed');
    }
    await repos.settings.delete(drillRunKey(settings.id));
    await this.later(settings, (settings.scheduleEveryHours ?? 0) * 3600_000, ran);
  }

  private async drillItem(settings: DrillSettings): Promise<void> {
    const { repos, operations } = this.options;
    const ran = this.options.now();
    const item = await repos.items.find(settings.id);
    if (!item) {
      await repos.drillSettings.update(settings.id, { nextRunAt: null });
      return;
    }
    let run = await repos.settings.get<DrillRun>(drillRunKey(item.id));
    if (!run && item.state !== 'protected') return this.later(settings, DRILL_RETRY_MS, null);
    let failure: string | null = null;
    try {
      if (!run) {
        const started = await operations.startTestFailover(item.id, { point: { kind: 'latest-processed' }, trigger: 'schedule', initiator: SCHEDULER_INITIATOR });
        run = { testJobId: started.job.id, reportId: started.report.id };
        await repos.settings.set(drillRunKey(item.id), run);
      }
      const job = await this.wait(run.testJobId);
      if (job.state !== 'succeeded') failure = `test failover job ${job.id} ${job.state}: ${job.error ?? 'no error given'}`;
    } catch (err) {
      if (this.stopped) return;
      // Something else took the item between the look and the start: leave it alone.
      if (!run && isLifeboatError(err, 'ILLEGAL_TRANSITION') && (await repos.items.get(item.id)).state !== 'protected') return this.later(settings, DRILL_RETRY_MS, null);
      failure = `${run ? 'the test failover' : 'the drill could not start'}: ${asLifeboatError(err).message}`;
    }
    // Always clean up what the drill made, whatever it showed.
    if ((await repos.items.get(item.id)).state === 'test-failover') {
      try {
        const cleanup = await this.wait((await operations.cleanupTestFailover(item.id, { notes: NOTES, initiator: SCHEDULER_INITIATOR })).id);
        if (cleanup.state !== 'succeeded') failure ??= `cleanup job ${cleanup.id} ${cleanup.state}: ${cleanup.error ?? 'no error given'}`;
      } catch (err) {
        if (this.stopped) return;
        failure ??= `the cleanup could not run: ${asLifeboatError(err).message}`;
      }
    }
    const report = run?.reportId ? await repos.drillReports.find(run.reportId) : undefined;
    if (failure === null && report?.outcome === 'failed') failure = report.error ?? 'the report says the drill failed';
    const reportText = report ? `report ${report.id}` : 'no report';
    await this.verdict(settings, `item ${item.compute.targetName} (${item.id})`, failure === null ? null : `${reportText}: ${failure}`, ran);
  }

  private async drillPlan(settings: DrillSettings): Promise<void> {
    const { repos, plans } = this.options;
    const ran = this.options.now();
    const plan = await repos.recoveryPlans.find(settings.id);
    if (!plan) {
      await repos.drillSettings.update(settings.id, { nextRunAt: null });
      return;
    }
    const itemIds = plan.groups.flatMap((g) => g.itemIds);
    let run = await repos.settings.get<DrillRun>(drillRunKey(plan.id));
    if (!run) {
      for (const id of itemIds) if ((await repos.items.get(id)).state !== 'protected') return this.later(settings, DRILL_RETRY_MS, null);
    }
    let failure: string | null = null;
    try {
      if (!run) {
        const job = await plans.start(plan.id, { operation: 'test-failover', point: { kind: 'latest-processed' }, unattended: true, initiator: SCHEDULER_INITIATOR });
        run = { testJobId: job.id, reportId: null };
        await repos.settings.set(drillRunKey(plan.id), run);
      }
      const job = await this.wait(run.testJobId);
      if (job.state !== 'succeeded') failure = `plan job ${job.id} ${job.state}: ${job.error ?? 'no error given'}`;
    } catch (err) {
      if (this.stopped) return;
      // An operator's job of the plan is queued or running: leave it alone.
      if (!run && isLifeboatError(err, 'CONFLICT')) return this.later(settings, DRILL_RETRY_MS, null);
      failure = `${run ? 'the plan job' : 'the drill could not start'}: ${asLifeboatError(err).message}`;
    }
    let anyUp = false;
    for (const id of itemIds) if ((await repos.items.get(id)).state === 'test-failover') anyUp = true;
    if (anyUp) {
      try {
        const cleanup = await this.wait((await plans.start(plan.id, { operation: 'cleanup-test-failover', notes: NOTES, unattended: true, initiator: SCHEDULER_INITIATOR })).id);
        if (cleanup.state !== 'succeeded') failure ??= `cleanup job ${cleanup.id} ${cleanup.state}: ${cleanup.error ?? 'no error given'}`;
      } catch (err) {
        if (this.stopped) return;
        failure ??= `the cleanup could not run: ${asLifeboatError(err).message}`;
      }
    }
    // The items' reports: a drill whose jobs passed can still have failed its probes.
    if (run) {
      const testJob = await repos.jobs.get(run.testJobId);
      for (let i = 0; i < testJob.steps.length; i++) {
        const itemJobs = (await repos.settings.get<Record<string, string>>(planStepKey(testJob.id, i))) ?? {};
        for (const jobId of Object.values(itemJobs)) {
          const report = await repos.drillReports.findByJob(jobId);
          if (report?.outcome === 'failed') failure ??= `report ${report.id} of item ${report.itemId}: ${report.error ?? 'failed'}`;
        }
      }
    }
    await this.verdict(settings, `plan ${plan.name} (${plan.id})`, failure === null ? null : `${run ? `job ${run.testJobId}` : 'no job'}: ${failure}`, ran);
  }
}
