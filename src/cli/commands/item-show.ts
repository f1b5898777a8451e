import type { Command } from 'commander';
import type { ReplicatedItem } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, formatBytes, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields, seconds, table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'show <item>', 'show a replicated item: state, RPO, compute settings and disks').action(async (id: string, opts: ApiFlags) => {
    const i = await connect(opts, env).get<ReplicatedItem>(`/api/v1/items/${encodeURIComponent(id)}`);
    const c = i.compute;
    emit(
      opts,
      env,
      i,
      [
        fields([
          ['id', i.id],
          ['machine', i.machineId],
          ['state', i.state],
          ['initial replication', `${i.initialReplicationPercent}%`],
          ['rpo', i.rpoSeconds === null ? null : seconds(i.rpoSeconds)],
          ['vault', i.vaultId],
          ['policy', i.policyId],
          ['process server', i.processServerId],
          ['generation', i.generation],
          ['target', `${c.targetName} (${c.size}) network ${c.network ?? '-'} subnet ${c.subnet ?? '-'} ip ${c.ip ?? '-'}`],
          ['updated', i.updatedAt],
        ]),
        'disks:',
        table(['name', 'size'], i.disks.map((d) => [d.name, formatBytes(d.sizeBytes)]), '  none'),
      ].join('\n'),
    );
  });
}
