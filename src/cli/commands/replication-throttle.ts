import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import type { ReplicationControl } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';

export function controlText(c: ReplicationControl): string {
  const limit = c.throttleBytesPerSec === 0 ? 'no bandwidth limit' : `limited to ${(c.throttleBytesPerSec / 125_000).toFixed(1)} Mbit/s`;
  return `item ${c.itemId}: replication ${c.paused ? 'paused' : 'running'}, ${limit}`;
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'throttle <item>', "limit an item's replication bandwidth")
    .requiredOption('--throttle-mbps <mbps>', 'the limit in Mbit/s; 0 removes it')
    .action(async (id: string, opts: ApiFlags & { throttleMbps: string }) => {
      const mbps = Number(opts.throttleMbps);
      if (!Number.isFinite(mbps) || mbps < 0) throw new LifeboatError('USAGE', '--throttle-mbps must be a number of Mbit/s, 0 or more');
      const control = await connect(opts, env).request<ReplicationControl>('PATCH', `/api/v1/items/${encodeURIComponent(id)}/throttle`, { throttleMbps: mbps });
      emit(opts, env, control, controlText(control));
    });
}
