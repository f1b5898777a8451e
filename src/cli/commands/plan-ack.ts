import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import type { Job } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { waitingManualAction } from './plan-common.js';

export function register(job: Command, env: Env): void {
  apiCommand(job, 'ack <job>', "acknowledge the manual action a recovery plan's job waits on, so the plan goes on")
    .option('--step <n>', 'the step index (from 0) of the manual action; default: the one waiting now')
    .action(async (id: string, opts: ApiFlags & { step?: string }) => {
      const client = connect(opts, env);
      const path = `/api/v1/jobs/${encodeURIComponent(id)}`;
      let step: number;
      if (opts.step !== undefined) {
        step = Number(opts.step);
        if (!Number.isInteger(step) || step < 0) throw new LifeboatError('USAGE', `--step must be a step index from 0, not ${opts.step}`);
      } else {
        const waiting = waitingManualAction(await client.get<Job>(path));
        if (!waiting) throw new LifeboatError('CONFLICT', `job ${id} is not waiting on a manual action`, { retryable: false });
        step = waiting.step;
      }
      const acked = await client.post<Job>(`${path}/acknowledge`, { step });
      emit(opts, env, { jobId: acked.id, step, acknowledged: true }, `acknowledged step ${step} (${acked.steps[step]?.name ?? ''}) of job ${acked.id}; the plan goes on`);
    });
}
