/** What the plan commands share: finding plans by id or name, and following a plan's job up to its end or to a manual action. */
import { LifeboatError } from '../../core/errors.js';
import type { Job, JobState, RecoveryPlan } from '../../core/model.js';
import { resolveRef, type ApiClient } from '../api-client.js';
import type { Env } from '../context.js';
import type { ApiFlags } from '../profile.js';
import { fields, table } from '../table.js';

const ENDED: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];
const POLL_MS = 500;
/** A plan step's name for a manual action (src/vault/plans/steps.ts). */
const MANUAL_STEP = /^Group \d+ \(.*?\): manual action: (.*)$/s;

export const planPath = (id: string, rest = ''): string => `/api/v1/plans/${encodeURIComponent(id)}${rest}`;

export async function resolvePlan(client: ApiClient, ref: string): Promise<string> {
  return resolveRef(client, '/api/v1/plans', 'recovery plan', ref);
}

/** The manual action the job waits on now: its step index (from 0) and text. */
export function waitingManualAction(job: Job): { step: number; text: string } | undefined {
  if (job.state !== 'running') return undefined;
  const step = job.steps.findIndex((s) => s.state === 'running');
  const match = step >= 0 ? MANUAL_STEP.exec(job.steps[step]!.name) : null;
  return match ? { step, text: match[1]! } : undefined;
}

export function ackHint(job: Job, manual: { step: number; text: string }): string {
  return `job ${job.id} waits for a manual action: ${manual.text}\nwhen it is done: lifeboat job ack ${job.id} --step ${manual.step}`;
}

/**
 * Follows a plan's job, a line per step change (not with --json), until it ends or
 * waits on a manual action; then says what to do and how to acknowledge it.
 */
export async function followPlanJob(client: ApiClient, jobId: string, opts: ApiFlags, env: Env, signals: AbortSignal): Promise<Job> {
  const path = `/api/v1/jobs/${encodeURIComponent(jobId)}`;
  const seen = new Map<number, string>();
  for (;;) {
    const job = await client.get<Job>(path);
    if (!opts.json) {
      job.steps.forEach((s, n) => {
        if (s.state === 'queued' || s.state === 'cancelled') return;
        const line = `step ${n + 1}/${job.steps.length} ${s.name}: ${s.state}${s.state === 'running' ? ` ${s.progressPercent}%` : ''}${s.error ? ` (${s.error})` : ''}`;
        if (seen.get(n) !== line) env.stdout.write(line + '\n');
        seen.set(n, line);
      });
    }
    if (ENDED.includes(job.state)) return job;
    const manual = waitingManualAction(job);
    if (manual) {
      if (!opts.json) env.stdout.write(ackHint(job, manual) + '\n');
      return job;
    }
    if (signals.aborted) throw new LifeboatError('USAGE', `stopped following job ${jobId}, which is still ${job.state}; follow it again with lifeboat job watch ${jobId}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

export function planText(plan: RecoveryPlan): string {
  return [
    fields([
      ['id', plan.id],
      ['name', plan.name],
      ['vault', plan.vaultId],
      ['description', plan.description || null],
      ['created', plan.createdAt],
      ['updated', plan.updatedAt],
    ]),
    table(
      ['#', 'group', 'items', 'pre-scripts', 'manual actions', 'post-scripts'],
      plan.groups.map((g, i) => [i + 1, g.name, g.itemIds.join(', '), g.preScripts.join(', ') || null, g.manualActions.join(' | ') || null, g.postScripts.join(', ') || null]),
    ),
  ].join('\n');
}
