import type { Command } from 'commander';
import type { ReplicatedItem } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { seconds, table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list replicated items with their state and RPO').action(async (opts: ApiFlags) => {
    const items = await connect(opts, env).all<ReplicatedItem>('/api/v1/items');
    emit(
      opts,
      env,
      items,
      table(
        ['id', 'machine', 'state', 'initial replication', 'rpo', 'policy', 'vault'],
        items.map((i) => [i.id, i.machineId, i.state, `${i.initialReplicationPercent}%`, i.rpoSeconds === null ? null : seconds(i.rpoSeconds), i.policyId, i.vaultId]),
        'no replicated items',
      ),
    );
  });
}
