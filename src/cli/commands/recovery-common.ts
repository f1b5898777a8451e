/**
 * What the recovery commands share: the `--point` syntax, following a job to its end
 * with a line per step change (as `lifeboat job watch` prints them), and the drill
 * report as a human reads it.
 */
import { LifeboatError } from '../../core/errors.js';
import type { DrillReport, Job, JobState, PointChoice } from '../../core/model.js';
import type { ApiClient } from '../api-client.js';
import type { Env } from '../context.js';
import type { ApiFlags } from '../profile.js';
import { fields, table } from '../table.js';
import { ackHint, waitingManualAction } from './plan-common.js';

const ENDED: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];
const POINT_KINDS = ['latest-processed', 'latest-app-consistent', 'latest'] as const;
/** A point id, or a unique prefix of one (time ids: Crockford base32). */
const POINT_ID = /^[0-9A-HJKMNP-TV-Z]{6,26}$/i;
/** Console lines a report shows. */
const CONSOLE_LINES = 20;
const POLL_MS = 500;

/** `latest-processed | latest-app-consistent | latest | <point id> | <ISO-8601 time>`. */
export function parsePoint(text: string): PointChoice {
  if ((POINT_KINDS as readonly string[]).includes(text)) return { kind: text as (typeof POINT_KINDS)[number] };
  if (/^\d{4}-\d{2}-\d{2}([T ]|$)/.test(text)) {
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) throw new LifeboatError('USAGE', `--point ${JSON.stringify(text)} is not a valid time`);
    return { kind: 'time', at: new Date(ms).toISOString() };
  }
  if (POINT_ID.test(text)) return { kind: 'point', pointId: text.toUpperCase() };
  throw new LifeboatError('USAGE', `--point must be latest-processed, latest-app-consistent, latest, a point id or an ISO-8601 time, not ${JSON.stringify(text)}`);
}

export const POINT_HELP = 'latest-processed (default), latest-app-consistent, latest (processes everything pending first), a point id, or an ISO-8601 time';

export function itemPath(item: string, rest = ''): string {
  return `/api/v1/items/${encodeURIComponent(item)}${rest}`;
}

/**
 * Follows the job until it ends, printing each step change (not with --json); returns
 * the ended job. With `untilManualAction` (a recovery plan's job) it also returns when
 * the job waits on a manual action, after saying what to do and how to acknowledge it.
 */
export async function followJob(
  client: ApiClient,
  jobId: string,
  opts: ApiFlags,
  env: Env,
  signals: AbortSignal,
  options: { untilManualAction?: boolean } = {},
): Promise<Job> {
  const path = `/api/v1/jobs/${encodeURIComponent(jobId)}`;
  const seen = new Map<number, string>();
  const show = (j: Job): void => {
    if (opts.json) return;
    j.steps.forEach((s, n) => {
      if (s.state === 'queued' || s.state === 'cancelled') return;
      const line = `step ${n + 1}/${j.steps.length} ${s.name}: ${s.state}${s.state === 'running' ? ` ${s.progressPercent}%` : ''}${s.error ? ` (${s.error})` : ''}`;
      if (seen.get(n) !== line) env.stdout.write(line + '\n');
      seen.set(n, line);
    });
  };
  for (;;) {
    const job = await client.get<Job>(path);
    show(job);
    if (ENDED.includes(job.state)) return job;
    const manual = options.untilManualAction ? waitingManualAction(job) : undefined;
    if (manual) {
      if (!opts.json) env.stdout.write(ackHint(job, manual) + '\n');
      return job;
    }
    if (signals.aborted) throw new LifeboatError('USAGE', `stopped following job ${jobId}, which is still ${job.state}; follow it again with lifeboat job watch ${jobId}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** A job that did not succeed, as the CLI's error (exit code of JOB_FAILED). */
export function jobFailed(job: Job, json: boolean): LifeboatError {
  const failed = job.steps.find((s) => s.state === 'failed' && job.error?.startsWith(s.name)) ?? job.steps.find((s) => s.state === 'failed');
  return new LifeboatError('JOB_FAILED', `job ${job.id} (${job.kind}) ${job.state}${failed ? ` at step "${failed.name}"` : ''}: ${job.error ?? failed?.error ?? 'no error given'}`, {
    details: { reported: json, jobId: job.id, state: job.state, step: failed?.name ?? null },
  });
}

/** The drill report of a test failover job (reports are listed newest first). */
export async function reportOfJob(client: ApiClient, item: string, jobId: string): Promise<DrillReport | undefined> {
  const { items } = await client.get<{ items: DrillReport[] }>(itemPath(item, '/drill-reports'));
  return items.find((r) => r.jobId === jobId);
}

function duration(s: number | null): string | null {
  if (s === null) return null;
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function reportText(r: DrillReport): string {
  const consoleTail = r.consoleLog.split('\n').filter((l, i, all) => l !== '' || i < all.length - 1).slice(-CONSOLE_LINES);
  return [
    `drill report ${r.id}: ${r.outcome.toUpperCase()}`,
    fields([
      ['item', r.itemId],
      ['operation', `${r.operation} (${r.trigger}${r.planId ? `, plan ${r.planId}` : ''})`],
      ['job', r.jobId],
      ['cleanup job', r.cleanupJobId],
      ['started', r.startedAt],
      ['ended', r.endedAt],
      ['RPO', duration(r.rpoSeconds)],
      ['RTO', duration(r.rtoSeconds)],
      ['driver', `${r.driver}${r.accel ? ` (${r.accel})` : ''}`],
      ['network', r.network],
      ['machine', r.machineId],
      ['error', r.error],
    ]),
    'point:',
    r.point
      ? indent(table(['disk', 'point', 'captured', 'consistency'], r.point.disks.map((d) => [d.disk, d.pointId, d.capturedAt, d.consistency])))
      : '  not chosen yet',
    'probes:',
    indent(table(['probe', 'kind', 'result', 'time', 'detail'], r.probes.map((p) => [p.name, p.kind, p.ok ? 'ok' : 'FAILED', `${p.durationMs} ms`, p.detail]), 'none')),
    `notes: ${r.notes ?? '-'}`,
    `console (last ${CONSOLE_LINES} lines):`,
    consoleTail.length > 0 ? indent(consoleTail.join('\n')) : '  (kept at cleanup)',
  ].join('\n');
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}
