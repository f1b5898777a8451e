import type { Command } from 'commander';
import type { Job } from '../../core/model.js';
import { connect, type ApiClient } from '../api-client.js';
import { emit, formatBytes, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { followJob, itemPath, jobFailed } from './recovery-common.js';

interface WaitFlags extends ApiFlags {
  /** commander's --no-wait */
  wait: boolean;
}

interface ReverseStatus {
  readonly itemId: string;
  readonly session: string | null;
  readonly active: boolean;
  readonly bytesShipped: number;
  readonly blocksShipped: number;
  readonly queuedBlocks: number;
  readonly jobs: Readonly<Record<string, { bytes: number; blocks: number }>>;
}

/** The CLI's reprotect and failback (docs/recovery.md): both follow their job and print the bytes shipped to the primary machine. */
export function register(program: Command, env: Env, signals: AbortSignal): void {
  const run = async (client: ApiClient, opts: WaitFlags, item: string, action: 'reprotect' | 'failback'): Promise<void> => {
    const job = await client.post<Job>(itemPath(item, `/${action}`), {});
    if (!opts.wait) {
      emit(opts, env, job, `${action} job ${job.id} queued; follow it with lifeboat job watch ${job.id}`);
      return;
    }
    if (!opts.json) env.stdout.write(`${action} job ${job.id}\n`);
    const ended = await followJob(client, job.id, opts, env, signals);
    const status = await client.get<ReverseStatus>(itemPath(item, '/reverse'));
    const shipped = status.jobs[job.id] ?? { bytes: 0, blocks: 0 };
    if (ended.state !== 'succeeded') {
      if (opts.json) emit(opts, env, { ...ended, shipped }, '');
      throw jobFailed(ended, opts.json === true);
    }
    const done =
      action === 'reprotect'
        ? `item ${item} reprotected: ${formatBytes(shipped.bytes)} (${shipped.bytes} bytes, ${shipped.blocks} blocks) written to the primary machine; reverse replication runs until lifeboat failback ${item}`
        : `item ${item} failed back: ${formatBytes(shipped.bytes)} (${shipped.bytes} bytes, ${shipped.blocks} blocks) of last changes written to the primary machine; replication runs in the original direction again`;
    emit(opts, env, { ...ended, shipped }, done);
  };

  apiCommand(program, 'reprotect <item>', "reprotect a committed item: the replica's changes go to the primary machine's agent (only the blocks that differ), then continuously")
    .option('--no-wait', 'only queue the job and print it')
    .action(async (item: string, opts: WaitFlags) => run(connect(opts, env), opts, item, 'reprotect'));

  apiCommand(program, 'failback <item>', 'fail a reprotected item back: stop the replica, ship its last changes, make it the newest point, replicate from the primary machine again and start it')
    .option('--no-wait', 'only queue the job and print it')
    .action(async (item: string, opts: WaitFlags) => run(connect(opts, env), opts, item, 'failback'));
}
