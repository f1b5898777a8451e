import type { AlertKind, Job, JobKind, JobState } from './types';

/**
 * Jobs and alerts in words. The titles mirror `JOB_KINDS[kind].title` of src/core/jobs.ts
 * (the portal may import only types from the vault; test/web/jobs.test.ts checks that
 * the two agree).
 */
export const JOB_KIND_WORDS: Readonly<Record<JobKind, string>> = {
  'enable-protection': 'Enable protection',
  'finalize-protection': 'Finalize protection',
  'test-failover': 'Test failover',
  'cleanup-test-failover': 'Cleanup test failover',
  failover: 'Failover',
  commit: 'Commit',
  reprotect: 'Reprotect',
  failback: 'Failback',
  'change-recovery-point': 'Change recovery point',
  'recovery-plan': 'Recovery plan',
};

export function jobKindWords(kind: string): string {
  return JOB_KIND_WORDS[kind as JobKind] ?? kind;
}

export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

export function jobEnded(job: Pick<Job, 'state'>): boolean {
  return job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled';
}

/** The running step, or else the first queued one while the job has not ended. */
export function currentStep(job: Job): { index: number; step: Job['steps'][number] } | null {
  let index = job.steps.findIndex((s) => s.state === 'running');
  if (index < 0 && !jobEnded(job)) index = job.steps.findIndex((s) => s.state === 'queued');
  const step = index >= 0 ? job.steps[index] : undefined;
  return step ? { index, step } : null;
}

/** Overall progress: steps done out of all, plus the running step's share. */
export function jobPercent(job: Job): number {
  if (job.steps.length === 0) return job.state === 'succeeded' ? 100 : 0;
  if (job.state === 'succeeded') return 100;
  const done = job.steps.filter((s) => s.state === 'succeeded' || s.state === 'failed').length;
  const running = job.steps.find((s) => s.state === 'running');
  return ((done + (running ? running.progressPercent / 100 : 0)) / job.steps.length) * 100;
}

/** Seconds from its start to its end (or to now while it runs); null before it started. */
export function jobSeconds(job: Pick<Job, 'startedAt' | 'endedAt'>, now = Date.now()): number | null {
  if (!job.startedAt) return null;
  const end = job.endedAt ? new Date(job.endedAt).getTime() : now;
  return Math.max(0, (end - new Date(job.startedAt).getTime()) / 1000);
}

/** A recovery plan's manual action step name (src/vault/plans/steps.ts, planStepName). */
const MANUAL_STEP = /^Group \d+ \(.*?\): manual action: (.*)$/s;

/** The manual action a recovery plan's job waits on now: its step index (from 0) and text. */
export function waitingManualAction(job: Job): { step: number; text: string } | null {
  if (job.kind !== 'recovery-plan' || job.state !== 'running') return null;
  const step = job.steps.findIndex((s) => s.state === 'running');
  const m = step >= 0 ? MANUAL_STEP.exec(job.steps[step]!.name) : null;
  return m ? { step, text: m[1]! } : null;
}

export const ALERT_KIND_WORDS: Readonly<Record<AlertKind, string>> = {
  'rpo-threshold-exceeded': 'RPO above its threshold',
  'heartbeat-lost': 'Heartbeat lost',
  'job-failed': 'Job failed',
  'registration-key-expiring': 'Registration key expiring',
  'spool-filling': 'Spool filling up',
  'journal-gap': 'Journal gap',
  'drill-failed': 'Drill failed',
};

export function alertKindWords(kind: string): string {
  return ALERT_KIND_WORDS[kind as AlertKind] ?? kind;
}
