import type { Command } from 'commander';
import type { Job } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list jobs (Enable protection, Failover, ...)').action(async (opts: ApiFlags) => {
    const jobs = await connect(opts, env).all<Job>('/api/v1/jobs');
    emit(
      opts,
      env,
      jobs,
      table(
        ['id', 'kind', 'item', 'state', 'step', 'created', 'error'],
        jobs.map((j) => {
          const done = j.steps.filter((s) => s.state === 'succeeded').length;
          return [j.id, j.kind, j.itemId, j.state, `${done}/${j.steps.length}`, j.createdAt, j.error];
        }),
        'no jobs',
      ),
    );
  });
}
