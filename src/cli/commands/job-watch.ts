import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import type { Job, JobState } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { jobText, stepsTable } from './job-show.js';
import { ackHint, waitingManualAction } from './plan-common.js';
import { jobFailed } from './recovery-common.js';

const ENDED: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];
/** A stream that ends before the job does (server restart) is reopened this many times in a row at most. */
const MAX_RECONNECTS = 5;

export function register(parent: Command, env: Env, signals: AbortSignal): void {
  apiCommand(parent, 'watch <job>', "follow a job's steps live until it ends; exits 0 if it succeeded, non-zero with its error otherwise").action(
    async (id: string, opts: ApiFlags) => {
      const client = connect(opts, env);
      const path = `/api/v1/jobs/${encodeURIComponent(id)}`;
      const tty = (env.stdout as { isTTY?: boolean }).isTTY === true && !opts.json;
      let job = await client.get<Job>(path);
      let drawnLines = 0;
      const seen = new Map<string, string>();
      const show = (j: Job): void => {
        if (opts.json) return;
        // A recovery plan waiting on a manual action: what to do, and how to acknowledge it.
        const manual = waitingManualAction(j);
        if (tty) {
          const text = `job ${j.id} ${j.kind}: ${j.state}\n${stepsTable(j)}\n${manual ? `${ackHint(j, manual)}\n` : ''}`;
          env.stdout.write((drawnLines > 0 ? `\x1b[${drawnLines}A\x1b[J` : '') + text);
          drawnLines = text.split('\n').length - 1;
          return;
        }
        j.steps.forEach((s, n) => {
          const line = `step ${n + 1}/${j.steps.length} ${s.name}: ${s.state} ${s.progressPercent}%${s.error ? ` (${s.error})` : ''}`;
          if (seen.get(`${n}`) !== line) env.stdout.write(line + '\n');
          seen.set(`${n}`, line);
        });
        if (seen.get('job') !== j.state) env.stdout.write(`job ${j.id} ${j.kind}: ${j.state}\n`);
        seen.set('job', j.state);
        if (manual && seen.get('manual') !== `${manual.step}`) env.stdout.write(ackHint(j, manual) + '\n');
        seen.set('manual', manual ? `${manual.step}` : '');
      };
      show(job);
      let reconnects = 0;
      while (!ENDED.includes(job.state) && !signals.aborted) {
        for await (const ev of client.events(`${path}/events`, signals)) {
          try {
            job = JSON.parse(ev.data) as Job;
          } catch {
            continue; // a keep-alive or an event of another kind
          }
          reconnects = 0;
          show(job);
        }
        if (ENDED.includes(job.state) || signals.aborted) break;
        job = await client.get<Job>(path);
        show(job);
        if (++reconnects > MAX_RECONNECTS)
          throw new LifeboatError('SERVER_UNREACHABLE', `the event stream of job ${id} keeps ending while the job is ${job.state}`, { details: { server: client.target.server } });
        await new Promise((r) => setTimeout(r, 1000));
      }
      if (signals.aborted && !ENDED.includes(job.state)) throw new LifeboatError('USAGE', `stopped watching job ${id}, which is still ${job.state}`);
      if (opts.json) emit(opts, env, job, '');
      else if (!tty) env.stdout.write(jobText(job) + '\n');
      if (job.state !== 'succeeded') throw jobFailed(job, opts.json === true);
    },
  );
}
