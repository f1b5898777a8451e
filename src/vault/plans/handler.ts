import { LifeboatError, asLifeboatError } from '../../core/errors.js';
import { sleep } from '../../core/sleep.js';
import type { Job, JobKind } from '../../core/model.js';
import type { StepContext, StepHandler } from '../jobs/runner.js';
import type { RecoveryOperations } from '../recovery/module.js';
import { runScript } from './scripts.js';
import type { PlanService } from './service.js';
import { planAckKey, planStepKey, type PlanAck, type PlanRun, type PlanStep } from './steps.js';

export interface PlanHandlerOptions {
  readonly service: PlanService;
  readonly operations: RecoveryOperations;
  readonly scriptTimeoutMs: number;
  /** How often a manual action looks for its acknowledgement. */
  readonly ackPollMs: number;
}

/** The item job each operation starts (what an items step adopts after a restart). */
const ITEM_JOB_KIND: Readonly<Record<PlanRun['operation'], JobKind>> = {
  'test-failover': 'test-failover',
  'cleanup-test-failover': 'cleanup-test-failover',
  failover: 'failover',
};

/**
 * The one handler of every step of a `recovery-plan` job: it reads what the step
 * does from the job's stored run (PlanRun). Each step can run again after a
 * restart: scripts run again (they must be idempotent), a manual action finds its
 * stored acknowledgement, an items step waits for the item jobs it already started.
 */
export function planStepHandler(options: PlanHandlerOptions): StepHandler {
  return async (ctx) => {
    const run = await options.service.run(ctx.job.id);
    const step = run.steps[ctx.stepIndex];
    if (!step) throw new LifeboatError('INTERNAL', `job ${ctx.job.id} has no plan step ${ctx.stepIndex}`);
    switch (step.kind) {
      case 'pre-script':
      case 'post-script':
        return runScript({
          dir: options.service.scriptsDir,
          name: step.script,
          env: { LIFEBOAT_PLAN_ID: run.planId, LIFEBOAT_OPERATION: run.operation, LIFEBOAT_GROUP: step.groupName },
          timeoutMs: options.scriptTimeoutMs,
          signal: ctx.signal,
        });
      case 'manual':
        return waitForAcknowledgement(ctx, run, options.ackPollMs);
      case 'items':
        return runItems(ctx, run, step, options.operations);
    }
  };
}

async function waitForAcknowledgement(ctx: StepContext, run: PlanRun, pollMs: number): Promise<void> {
  if (run.unattended) return; // a scheduled drill: nobody is there to acknowledge
  const key = planAckKey(ctx.job.id, ctx.stepIndex);
  while (!(await ctx.repos.settings.get<PlanAck>(key))) {
    if (ctx.signal.aborted) throw new LifeboatError('JOB_FAILED', 'the vault stopped while the manual action waited for acknowledgement');
    await sleep(pollMs, ctx.signal);
  }
}

async function runItems(ctx: StepContext, run: PlanRun, step: Extract<PlanStep, { kind: 'items' }>, operations: RecoveryOperations): Promise<void> {
  const key = planStepKey(ctx.job.id, ctx.stepIndex);
  const started: Record<string, string> = { ...((await ctx.repos.settings.get<Record<string, string>>(key)) ?? {}) };
  const stepStartedAt = ctx.job.steps[ctx.stepIndex]?.startedAt ?? ctx.job.createdAt;
  const failures: string[] = [];
  const skipped = new Set<string>();
  const label = async (itemId: string): Promise<string> => {
    const item = await ctx.repos.items.find(itemId);
    return item ? `${item.compute.targetName} (${itemId})` : itemId;
  };
  // Started one after the other, each remembered before the next: a restart never starts an item twice.
  for (const itemId of step.itemIds) {
    if (started[itemId]) continue;
    if (ctx.signal.aborted) throw new LifeboatError('JOB_FAILED', 'the vault stopped while the items were starting');
    if (run.operation === 'cleanup-test-failover' && (await ctx.repos.items.get(itemId)).state === 'protected') {
      skipped.add(itemId); // no test failover to clean up
      continue;
    }
    let job: Job | undefined;
    try {
      job = await startItem(itemId, run, operations);
    } catch (err) {
      // Started by a run of this step that stopped before remembering it?
      job = (await ctx.repos.jobs.list({ itemId, kind: ITEM_JOB_KIND[run.operation] })).find(
        (j) => j.createdAt >= stepStartedAt && j.initiator === run.initiator && !Object.values(started).includes(j.id),
      );
      if (!job) {
        failures.push(`${await label(itemId)} did not start: ${asLifeboatError(err).message}`);
        continue;
      }
    }
    started[itemId] = job.id;
    await ctx.repos.settings.set(key, started);
  }
  const total = step.itemIds.length;
  let finished = skipped.size + failures.length;
  await ctx.progress(Math.floor((finished * 100) / total));
  const ended = await Promise.all(
    Object.entries(started).map(async ([itemId, jobId]) => {
      const job = await operations.waitForJob(jobId, ctx.signal);
      finished += 1;
      await ctx.progress(Math.floor((finished * 100) / total));
      return { itemId, job };
    }),
  );
  for (const { itemId, job } of ended) {
    if (job.state !== 'succeeded') failures.push(`${await label(itemId)}: job ${job.id} ${job.state}${job.error ? `: ${job.error}` : ''}`);
  }
  if (failures.length > 0) throw new LifeboatError('JOB_FAILED', `${failures.length} of ${total} items failed: ${failures.join('; ')}`);
}

function startItem(itemId: string, run: PlanRun, operations: RecoveryOperations): Promise<Job> {
  const point = run.point ?? { kind: 'latest-processed' as const };
  switch (run.operation) {
    case 'test-failover':
      return operations.startTestFailover(itemId, { point, trigger: 'plan', planId: run.planId, initiator: run.initiator }).then((r) => r.job);
    case 'cleanup-test-failover':
      return operations.cleanupTestFailover(itemId, { notes: run.notes, initiator: run.initiator });
    case 'failover':
      return operations.startFailover(itemId, { point, shutdownSource: run.shutdownSource, initiator: run.initiator, planId: run.planId });
  }
}
