/** What the plan commands share: finding plans by id or name, and the manual action a plan's job waits on. */
import type { Job, RecoveryPlan } from '../../core/model.js';
import { resolveRef, type ApiClient } from '../api-client.js';
import { fields, table } from '../table.js';

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
