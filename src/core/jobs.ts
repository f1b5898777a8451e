/**
 * Jobs: every long operation is a job with ordered steps (seed: Settings > Jobs >
 * Site Recovery jobs). Pure functions from a job to the next job; the vault
 * stores each result before doing the step's work, so a restart finds the
 * truth. Step names follow ASR's where it has them.
 *
 * Invariants: at most one step runs; steps before it have succeeded (or failed
 * while optional); steps after it are queued, or cancelled once the job ended;
 * step progress only grows, 0..100.
 *
 * After a restart (`resumeAfterRestart`), a job found running either resumes at
 * its current step (kinds whose steps are idempotent and which must never be
 * left half-done: failover, commit, failback, ...) or fails with a stated
 * reason. It never vanishes and never stays "running" with nobody running it.
 */
import { LifeboatError } from './errors.js';
import type { Job, JobKind, JobState, JobStep } from './model.js';

export interface StepSpec {
  readonly name: string;
  /** A failure of this step is recorded and the job carries on (seed: "shut down the source; failover continues if that fails"). */
  readonly optional?: boolean;
}

export interface JobKindSpec {
  /** The job's title as ASR shows it. */
  readonly title: string;
  readonly steps: readonly StepSpec[];
  /** Resumes at its current step after a restart; otherwise fails cleanly. */
  readonly resumable: boolean;
  /** Whether an operator may cancel it while it runs. */
  readonly cancellable: boolean;
}

const s = (name: string, optional = false): StepSpec => (optional ? { name, optional } : { name });

export const JOB_KINDS: Readonly<Record<JobKind, JobKindSpec>> = {
  'enable-protection': {
    title: 'Enable protection',
    steps: [s('Prerequisites check'), s('Identify the target'), s('Install the mobility service'), s('Enable replication'), s('Start initial replication')],
    // A push install cut half-way leaves the machine in an unknown state: run it again.
    resumable: false,
    cancellable: true,
  },
  'finalize-protection': {
    title: 'Finalize protection',
    steps: [s('Prerequisites check'), s('Finalize protection on the primary'), s('Start continuous replication')],
    resumable: true,
    cancellable: false,
  },
  'test-failover': {
    title: 'Test failover',
    steps: [
      s('Prerequisites check for test failover'),
      s('Process data up to the recovery point'),
      s('Create the test virtual machine'),
      s('Start the test virtual machine'),
      s('Check the test virtual machine'),
    ],
    // A drill is cheap to repeat; what it created half-way is removed by "Cleanup test failover".
    resumable: false,
    cancellable: true,
  },
  'cleanup-test-failover': {
    title: 'Cleanup test failover',
    steps: [s('Prerequisites check'), s('Shut down the test virtual machine'), s('Delete the test virtual machine'), s('Record the notes')],
    resumable: true,
    cancellable: false,
  },
  failover: {
    title: 'Failover',
    steps: [
      s('Prerequisites check for failover'),
      s('Shut down the source machine', true),
      s('Fence the source'),
      s('Process data up to the recovery point'),
      s('Create the replica virtual machine'),
      s('Start the replica virtual machine'),
    ],
    resumable: true,
    cancellable: false,
  },
  commit: {
    title: 'Commit',
    steps: [s('Prerequisites check'), s('Commit the recovery point'), s('Delete the other recovery points')],
    resumable: true,
    cancellable: false,
  },
  reprotect: {
    title: 'Reprotect',
    steps: [s('Prerequisites check'), s('Prepare reverse replication'), s('Synchronize changed blocks'), s('Start reverse replication')],
    resumable: true,
    cancellable: false,
  },
  failback: {
    title: 'Failback',
    steps: [
      s('Prerequisites check for failback'),
      s('Shut down the replica virtual machine', true),
      s('Fence the replica'),
      s('Synchronize the last changes'),
      // Before the start: the agent's trackers must track the disk (its digest map equal to the
      // newest point) before the primary machine writes to it again.
      s('Resume replication in the original direction'),
      // Optional: replication already runs in the original direction; without an agent start
      // command the operator starts the machine (the step's error says so).
      s('Start the primary machine', true),
    ],
    resumable: true,
    cancellable: false,
  },
  'change-recovery-point': {
    title: 'Change recovery point',
    steps: [
      s('Prerequisites check'),
      s('Shut down the replica virtual machine'),
      s('Create the replica virtual machine'),
      s('Start the replica virtual machine'),
    ],
    resumable: true,
    cancellable: false,
  },
  // Steps come from the plan's groups (createJob's `steps`): pre-scripts, the group's
  // items in parallel, manual actions, post-scripts, group after group.
  'recovery-plan': {
    title: 'Recovery plan',
    steps: [],
    resumable: true,
    cancellable: false,
  },
};

/** Kinds whose steps are given when the job is created (a recovery plan's). */
export const DYNAMIC_STEP_KINDS: readonly JobKind[] = ['recovery-plan'];

const iso = (d: Date) => d.toISOString();

function illegal(job: Job, action: string, why: string): LifeboatError {
  return new LifeboatError('ILLEGAL_TRANSITION', `cannot ${action} job ${job.id} (${JOB_KINDS[job.kind].title}) in state '${job.state}': ${why}`, {
    details: { jobId: job.id, kind: job.kind, state: job.state, action },
  });
}

/** `steps` names the steps of a dynamic kind (DYNAMIC_STEP_KINDS) and is refused for the others. */
export function createJob(
  kind: JobKind,
  init: { id: string; itemId: string | null; initiator: string; now: Date; steps?: readonly string[] },
): Job {
  const dynamic = DYNAMIC_STEP_KINDS.includes(kind);
  if (dynamic !== (init.steps !== undefined)) {
    throw new LifeboatError('INTERNAL', `${JOB_KINDS[kind].title}: steps are ${dynamic ? 'required' : 'fixed by the kind'}`);
  }
  if (dynamic && init.steps!.length === 0) throw new LifeboatError('VALIDATION', `${JOB_KINDS[kind].title} needs at least one step`);
  const names = init.steps ?? JOB_KINDS[kind].steps.map((st) => st.name);
  return {
    id: init.id,
    kind,
    itemId: init.itemId,
    state: 'queued',
    steps: names.map((name) => ({ name, state: 'queued', progressPercent: 0, startedAt: null, endedAt: null, error: null })),
    createdAt: iso(init.now),
    startedAt: null,
    endedAt: null,
    error: null,
    initiator: init.initiator,
  };
}

/** Index of the running step, or -1. */
export function currentStepIndex(job: Job): number {
  return job.steps.findIndex((st) => st.state === 'running');
}

function withStep(job: Job, i: number, patch: Partial<JobStep>): JobStep[] {
  return job.steps.map((st, j) => (j === i ? { ...st, ...patch } : st));
}

/** Queued -> running, first step running. */
export function startJob(job: Job, now: Date): Job {
  if (job.state !== 'queued') throw illegal(job, 'start', 'only a queued job starts');
  return { ...job, state: 'running', startedAt: iso(now), steps: withStep(job, 0, { state: 'running', startedAt: iso(now) }) };
}

function running(job: Job, action: string): number {
  const i = currentStepIndex(job);
  if (job.state !== 'running' || i < 0) throw illegal(job, action, 'the job is not running');
  return i;
}

/** Sets the running step's progress; a lower value than stored is ignored (reports may arrive out of order). */
export function setStepProgress(job: Job, percent: number): Job {
  if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
    throw new LifeboatError('VALIDATION', `step progress must be 0..100, not ${percent}`, { details: { percent } });
  }
  const i = running(job, 'report progress of');
  const step = job.steps[i]!;
  return { ...job, steps: withStep(job, i, { progressPercent: Math.max(step.progressPercent, percent) }) };
}

/** The running step succeeded: the next one runs, or the job succeeds after the last. */
export function completeStep(job: Job, now: Date): Job {
  const i = running(job, 'complete a step of');
  let steps = withStep(job, i, { state: 'succeeded', progressPercent: 100, endedAt: iso(now) });
  if (i + 1 < steps.length) {
    steps = steps.map((st, j) => (j === i + 1 ? { ...st, state: 'running', startedAt: iso(now) } : st));
    return { ...job, steps };
  }
  return { ...job, steps, state: 'succeeded', endedAt: iso(now) };
}

function end(job: Job, i: number, stepState: JobState, jobState: JobState, error: string | null, now: Date, stepError = error): Job {
  const steps = job.steps.map((st, j): JobStep => {
    if (j === i) return { ...st, state: stepState, endedAt: iso(now), error: stepState === 'failed' ? stepError : st.error };
    if (j > i && st.state === 'queued') return { ...st, state: 'cancelled' };
    return st;
  });
  return { ...job, steps, state: jobState, endedAt: iso(now), error };
}

/**
 * The running step failed. An optional step records its error and the job
 * carries on with the next step; any other fails the job, its later steps are
 * cancelled and the job keeps the error.
 */
export function failStep(job: Job, error: string, now: Date): Job {
  const i = running(job, 'fail a step of');
  if (JOB_KINDS[job.kind].steps[i]?.optional) {
    const failed = { ...job, steps: withStep(job, i, { state: 'failed', error, endedAt: iso(now) }) };
    if (i + 1 < job.steps.length) {
      return { ...failed, steps: failed.steps.map((st, j) => (j === i + 1 ? { ...st, state: 'running', startedAt: iso(now) } : st)) };
    }
    return { ...failed, state: 'succeeded', endedAt: iso(now) };
  }
  return end(job, i, 'failed', 'failed', `${job.steps[i]!.name}: ${error}`, now, error);
}

/** Operator cancel. Refused for kinds that must never stop half-way (failover, commit, ...). */
export function cancelJob(job: Job, now: Date): Job {
  if (job.state !== 'queued' && job.state !== 'running') throw illegal(job, 'cancel', 'the job has already ended');
  if (job.state === 'running' && !JOB_KINDS[job.kind].cancellable) {
    throw illegal(job, 'cancel', 'it must never be left half-done; wait for it to finish');
  }
  if (job.state === 'queued') {
    return { ...job, state: 'cancelled', endedAt: iso(now), steps: job.steps.map((st) => ({ ...st, state: 'cancelled' })) };
  }
  return end(job, currentStepIndex(job), 'cancelled', 'cancelled', 'cancelled by an operator', now);
}

export interface ResumeDecision {
  readonly job: Job;
  /** 'resume': run the current step again (it is idempotent); 'failed': the job ended with a stated reason; 'unchanged': nothing to do. */
  readonly outcome: 'resume' | 'failed' | 'unchanged';
}

/** What to do with a job found in the database when the vault starts. */
export function resumeAfterRestart(job: Job, now: Date): ResumeDecision {
  if (job.state !== 'running') return { job, outcome: 'unchanged' };
  const i = currentStepIndex(job);
  const spec = JOB_KINDS[job.kind];
  if (i < 0) {
    // Running with no running step: a crash between two writes. Never left as is.
    return {
      job: { ...job, state: 'failed', endedAt: iso(now), error: 'the vault restarted and found the job running with no running step' },
      outcome: 'failed',
    };
  }
  if (spec.resumable) return { job, outcome: 'resume' };
  const step = job.steps[i]!.name;
  return {
    job: end(job, i, 'failed', 'failed', `the vault restarted during '${step}'; ${spec.title} does not resume: run it again`, now),
    outcome: 'failed',
  };
}

/**
 * Overall progress 0..100: each step weighs the same. A succeeded step counts in
 * full, and so does an optional step that failed (the job went past it); a
 * running or failed step counts its own progress.
 */
export function jobProgress(job: Job): number {
  if (job.state === 'succeeded') return 100;
  if (job.steps.length === 0) return 0;
  const specs = JOB_KINDS[job.kind].steps;
  let sum = 0;
  job.steps.forEach((st, i) => {
    if (st.state === 'succeeded' || (st.state === 'failed' && specs[i]?.optional)) sum += 100;
    else if (st.state === 'running' || st.state === 'failed') sum += st.progressPercent;
  });
  return Math.floor(sum / job.steps.length);
}
