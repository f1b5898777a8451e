import type { Command } from 'commander';
import { isLifeboatError } from '../../core/errors.js';
import type { Agent, ReplicatedItem } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, formatBytes, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields, seconds, table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'show <item>', 'show a replicated item: state, RPO, compute settings and disks').action(async (id: string, opts: ApiFlags) => {
    const client = connect(opts, env);
    const i = await client.get<ReplicatedItem>(`/api/v1/items/${encodeURIComponent(id)}`);
    // The enrolled agent, when there is one (NOT_FOUND before enrollment).
    const agent = await client.get<Agent>(`/api/v1/items/${encodeURIComponent(i.id)}/agent`).catch((err: unknown) => {
      if (isLifeboatError(err, 'NOT_FOUND')) return undefined;
      throw err;
    });
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
        agent
          ? `agent: ${agent.hostname}, version ${agent.version ?? '-'}, last heartbeat ${agent.lastHeartbeatAt ?? 'never'}, certificate until ${agent.certificateNotAfter}`
          : 'agent: not enrolled (lifeboat item enroll-token ITEM)',
        ...(agent
          ? [
              table(
                ['disk', 'state', 'initial', 'acked', 'lag', 'last error'],
                agent.disks.map((d) => [d.name, d.state, `${Math.floor(d.initialPercent)}%`, d.ackedSequence, `${(d.lagMs / 1000).toFixed(1)} s`, d.lastError ?? '-']),
                '  no disk reported yet',
              ),
            ]
          : []),
      ].join('\n'),
    );
  });
}
