import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isLifeboatError } from '../../src/core/errors.js';
import type { Job, JobKind } from '../../src/core/model.js';
import {
  DYNAMIC_STEP_KINDS,
  JOB_KINDS,
  cancelJob,
  completeStep,
  createJob,
  currentStepIndex,
  failStep,
  jobProgress,
  resumeAfterRestart,
  setStepProgress,
  startJob,
} from '../../src/core/jobs.js';
import { FakeClock } from '../helpers/store.js';

const KINDS = Object.keys(JOB_KINDS) as JobKind[];
const illegal = (e: unknown) => isLifeboatError(e, 'ILLEGAL_TRANSITION');

/** A recovery plan's steps are given at creation: three made-up ones here. */
function newJob(kind: JobKind, clock = new FakeClock()): Job {
  const steps = DYNAMIC_STEP_KINDS.includes(kind) ? { steps: ['Group 1: pre-script a', 'Group 1: test failover of 1 item', 'Group 1: manual action: b'] } : {};
  return createJob(kind, { id: 'J1', itemId: 'I1', initiator: 'u1', now: clock.now(), ...steps });
}

test('Enable protection has ASR\'s five steps, all queued', () => {
  const job = newJob('enable-protection');
  assert.deepEqual(
    job.steps.map((s) => s.name),
    ['Prerequisites check', 'Identify the target', 'Install the mobility service', 'Enable replication', 'Start initial replication'],
  );
  assert.ok(job.steps.every((s) => s.state === 'queued' && s.progressPercent === 0));
  assert.equal(job.state, 'queued');
  assert.equal(jobProgress(job), 0);
});

test('a job runs its steps in order with monotonic progress, then succeeds at 100%', () => {
  const clock = new FakeClock();
  let job = startJob(newJob('commit', clock), clock.now());
  assert.equal(currentStepIndex(job), 0);
  job = setStepProgress(job, 50);
  assert.equal(jobProgress(job), 16);
  job = setStepProgress(job, 10);
  assert.equal(job.steps[0]!.progressPercent, 50, 'progress never goes back');
  assert.throws(() => setStepProgress(job, 100.5), (e: unknown) => isLifeboatError(e, 'VALIDATION'));
  clock.advance(1000);
  job = completeStep(job, clock.now());
  assert.equal(job.steps[0]!.state, 'succeeded');
  assert.equal(job.steps[1]!.state, 'running');
  assert.equal(job.steps[1]!.startedAt, clock.now().toISOString());
  assert.equal(jobProgress(job), 33);
  job = completeStep(completeStep(job, clock.now()), clock.now());
  assert.equal(job.state, 'succeeded');
  assert.equal(job.endedAt, clock.now().toISOString());
  assert.equal(jobProgress(job), 100);
  assert.throws(() => completeStep(job, clock.now()), illegal);
  assert.throws(() => startJob(job, clock.now()), illegal);
});

test('a failed step fails the job with its error; later steps are cancelled', () => {
  const clock = new FakeClock();
  let job = completeStep(startJob(newJob('reprotect', clock), clock.now()), clock.now());
  job = setStepProgress(job, 40);
  job = failStep(job, 'target store unreachable', clock.now());
  assert.equal(job.state, 'failed');
  assert.equal(job.error, 'Prepare reverse replication: target store unreachable');
  assert.deepEqual(job.steps.map((s) => s.state), ['succeeded', 'failed', 'cancelled', 'cancelled']);
  assert.equal(job.steps[1]!.error, 'target store unreachable');
  assert.equal(jobProgress(job), 35);
});

test('failover carries on when shutting down the source fails (seed), and records it', () => {
  const clock = new FakeClock();
  let job = completeStep(startJob(newJob('failover', clock), clock.now()), clock.now());
  assert.equal(job.steps[1]!.name, 'Shut down the source machine');
  job = failStep(job, 'ssh: connection refused', clock.now());
  assert.equal(job.state, 'running');
  assert.equal(job.steps[1]!.state, 'failed');
  assert.equal(job.steps[1]!.error, 'ssh: connection refused');
  assert.equal(job.steps[2]!.state, 'running');
  while (job.state === 'running') job = completeStep(job, clock.now());
  assert.equal(job.state, 'succeeded');
});

test('a running failover, commit, failback or reprotect cannot be cancelled; a drill and a queued job can', () => {
  const clock = new FakeClock();
  for (const kind of ['failover', 'commit', 'failback', 'reprotect', 'finalize-protection', 'cleanup-test-failover'] as const) {
    const job = startJob(newJob(kind, clock), clock.now());
    assert.throws(() => cancelJob(job, clock.now()), (e: unknown) => illegal(e) && /never be left half-done/.test((e as Error).message), kind);
    assert.equal(cancelJob(newJob(kind, clock), clock.now()).state, 'cancelled', `queued ${kind}`);
  }
  const drill = cancelJob(completeStep(startJob(newJob('test-failover', clock), clock.now()), clock.now()), clock.now());
  assert.equal(drill.state, 'cancelled');
  assert.deepEqual(drill.steps.map((s) => s.state), ['succeeded', 'cancelled', 'cancelled', 'cancelled', 'cancelled']);
  assert.throws(() => cancelJob(drill, clock.now()), illegal);
});

test('after a restart a running failover resumes at its step; a running drill fails with a stated reason', () => {
  const clock = new FakeClock();
  const fo = setStepProgress(completeStep(completeStep(startJob(newJob('failover', clock), clock.now()), clock.now()), clock.now()), 30);
  const r = resumeAfterRestart(fo, clock.now());
  assert.equal(r.outcome, 'resume');
  assert.equal(r.job, fo);
  assert.equal(currentStepIndex(r.job), 2);

  const tf = completeStep(startJob(newJob('test-failover', clock), clock.now()), clock.now());
  const d = resumeAfterRestart(tf, clock.now());
  assert.equal(d.outcome, 'failed');
  assert.equal(d.job.state, 'failed');
  assert.match(d.job.error ?? '', /restarted during 'Process data up to the recovery point'; Test failover does not resume/);
  assert.deepEqual(d.job.steps.map((s) => s.state), ['succeeded', 'failed', 'cancelled', 'cancelled', 'cancelled']);

  assert.equal(resumeAfterRestart(newJob('failover'), clock.now()).outcome, 'unchanged');
  const broken: Job = { ...fo, steps: fo.steps.map((s) => ({ ...s, state: s.state === 'running' ? 'succeeded' : s.state })) };
  assert.equal(resumeAfterRestart(broken, clock.now()).job.state, 'failed');
});

type Op = { op: 'progress'; p: number } | { op: 'complete' } | { op: 'fail' } | { op: 'cancel' } | { op: 'restart' };
const ops: fc.Arbitrary<Op> = fc.oneof(
  fc.integer({ min: 0, max: 100 }).map((p) => ({ op: 'progress' as const, p })),
  fc.constant({ op: 'complete' as const }),
  fc.constant({ op: 'fail' as const }),
  fc.constant({ op: 'cancel' as const }),
  fc.constant({ op: 'restart' as const }),
);

test('any sequence of operations keeps the step invariants, and no running job survives a restart unattended', () => {
  fc.assert(
    fc.property(fc.constantFrom(...KINDS), fc.array(ops, { maxLength: 40 }), (kind, seq) => {
      const clock = new FakeClock();
      let job = startJob(newJob(kind, clock), clock.now());
      let lastProgress = 0;
      for (const o of seq) {
        clock.advance(1000);
        try {
          if (o.op === 'progress') job = setStepProgress(job, o.p);
          else if (o.op === 'complete') job = completeStep(job, clock.now());
          else if (o.op === 'fail') job = failStep(job, 'boom', clock.now());
          else if (o.op === 'cancel') job = cancelJob(job, clock.now());
          else {
            const r = resumeAfterRestart(job, clock.now());
            if (job.state === 'running') assert.ok(r.outcome === (JOB_KINDS[kind].resumable ? 'resume' : 'failed'));
            job = r.job;
          }
        } catch (e) {
          assert.ok(illegal(e), String(e));
        }
        const running = job.steps.filter((s) => s.state === 'running').length;
        assert.equal(running, job.state === 'running' ? 1 : 0);
        const i = currentStepIndex(job);
        if (i >= 0) assert.ok(job.steps.slice(i + 1).every((s) => s.state === 'queued'));
        if (job.state !== 'running') assert.ok(job.steps.every((s) => s.state !== 'queued'), 'an ended job has no queued steps');
        const p = jobProgress(job);
        assert.ok(p >= 0 && p <= 100);
        if (job.state === 'running') {
          assert.ok(p >= lastProgress, 'overall progress never goes back while running');
          lastProgress = p;
        }
      }
    }),
    { numRuns: 1000 },
  );
});

test('a recovery plan job takes its steps at creation; a kind with fixed steps refuses them', () => {
  const clock = new FakeClock();
  const plan = newJob('recovery-plan', clock);
  assert.deepEqual(plan.steps.map((s) => [s.name, s.state]), [
    ['Group 1: pre-script a', 'queued'],
    ['Group 1: test failover of 1 item', 'queued'],
    ['Group 1: manual action: b', 'queued'],
  ]);
  const base = { id: 'J2', itemId: null, initiator: 'u1', now: clock.now() };
  assert.throws(() => createJob('recovery-plan', base), (e: unknown) => isLifeboatError(e, 'INTERNAL'));
  assert.throws(() => createJob('recovery-plan', { ...base, steps: [] }), (e: unknown) => isLifeboatError(e, 'VALIDATION'));
  assert.throws(() => createJob('failover', { ...base, steps: ['x'] }), (e: unknown) => isLifeboatError(e, 'INTERNAL'));
});
