import type { Job, JobState } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';

/**
 * Writes the difference between two versions of a job (as computed by the pure
 * functions of src/core/jobs.ts) to the database in one transaction: the job row, then the changed steps.
 * The job row is a compare-and-set on the state it had, so a cancel racing
 * the runner cannot be overwritten; returns false, having changed nothing,
 * when it lost that race.
 */
export async function persistJob(repos: Repositories, before: Job, after: Job): Promise<boolean> {
  return repos.db.transaction(async () => {
    // Always a compare-and-set on the state read, even when it does not change:
    // step writes of a runner that lost a race with a cancel are not applied.
    const won = await repos.jobs.updateState(after.id, before.state, after.state, {
      startedAt: after.startedAt,
      endedAt: after.endedAt,
      error: after.error,
    });
    if (!won) return false;
    for (const [i, step] of after.steps.entries()) {
      const old = before.steps[i];
      if (old && JSON.stringify(old) === JSON.stringify(step)) continue;
      await repos.jobs.updateStep(after.id, i, {
        state: step.state,
        progressPercent: step.progressPercent,
        startedAt: step.startedAt,
        endedAt: step.endedAt,
        error: step.error,
      });
    }
    return true;
  });
}

export const ENDED_JOB_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];
