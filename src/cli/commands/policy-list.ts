import type { Command } from 'commander';
import type { ReplicationPolicy } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { seconds, table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list replication policies').action(async (opts: ApiFlags) => {
    const policies = await connect(opts, env).all<ReplicationPolicy>('/api/v1/policies');
    emit(
      opts,
      env,
      policies,
      table(
        ['id', 'name', 'vault', 'rpo threshold', 'retention', 'app-consistent', 'crash-consistent'],
        policies.map((p) => [
          p.id,
          p.name,
          p.vaultId,
          seconds(p.rpoThresholdSeconds),
          `${p.retentionHours}h`,
          p.appConsistentFrequencyMinutes === 0 ? 'off' : seconds(p.appConsistentFrequencyMinutes * 60),
          seconds(p.crashConsistentFrequencySeconds),
        ]),
        'no policies',
      ),
    );
  });
}
