import type { Command } from 'commander';
import type { Job } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { bar, fields, table } from '../table.js';

export function stepsTable(job: Job): string {
  return table(['#', 'step', 'state', 'progress', 'error'], job.steps.map((s, n) => [n + 1, s.name, s.state, bar(s.progressPercent), s.error]));
}

export function jobText(job: Job): string {
  return [
    fields([
      ['id', job.id],
      ['kind', job.kind],
      ['item', job.itemId],
      ['state', job.state],
      ['started', job.startedAt],
      ['ended', job.endedAt],
      ['error', job.error],
    ]),
    stepsTable(job),
  ].join('\n');
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'show <job>', 'show a job and its steps with state and progress').action(async (id: string, opts: ApiFlags) => {
    const job = await connect(opts, env).get<Job>(`/api/v1/jobs/${encodeURIComponent(id)}`);
    emit(opts, env, job, jobText(job));
  });
}
