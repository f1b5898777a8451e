import type { Command } from 'commander';
import type { Env } from '../context.js';
import * as planAck from './plan-ack.js';
import * as planCreate from './plan-create.js';
import * as planRun from './plan-run.js';

/** The CLI's recovery plans and acknowledging a plan's manual actions (docs/recovery.md). */
export function register(program: Command, env: Env, signals: AbortSignal): void {
  const plan = program.command('plan').description('recovery plans: ordered groups of items with scripts and manual actions, run as one job');
  planCreate.register(plan, env);
  planRun.register(plan, env, signals);
  const job = program.commands.find((c) => c.name() === 'job') ?? program.command('job').description('jobs');
  planAck.register(job, env);
}
