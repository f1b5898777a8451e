import type { ReplicationPolicy } from '../../../core/model.js';
import { Repository, type RepoContext } from './base.js';

export type PolicySettings = Pick<
  ReplicationPolicy,
  'rpoThresholdSeconds' | 'retentionHours' | 'appConsistentFrequencyMinutes' | 'crashConsistentFrequencySeconds'
>;

/** Replication policies; ranges are validated above this layer, names are unique per vault. */
export class PolicyRepository extends Repository<ReplicationPolicy> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'policies',
      noun: 'replication policy',
      columns: {
        id: 'text',
        vaultId: 'text',
        name: 'text',
        rpoThresholdSeconds: 'int',
        retentionHours: 'int',
        appConsistentFrequencyMinutes: 'int',
        crashConsistentFrequencySeconds: 'int',
        createdAt: 'text',
      },
    });
  }

  create(input: Pick<ReplicationPolicy, 'vaultId' | 'name'> & PolicySettings): Promise<ReplicationPolicy> {
    return this.table.insert({
      id: this.ctx.newId(),
      vaultId: input.vaultId,
      name: input.name,
      rpoThresholdSeconds: input.rpoThresholdSeconds,
      retentionHours: input.retentionHours,
      appConsistentFrequencyMinutes: input.appConsistentFrequencyMinutes,
      crashConsistentFrequencySeconds: input.crashConsistentFrequencySeconds,
      createdAt: this.nowIso(),
    });
  }

  async findByName(vaultId: string, name: string): Promise<ReplicationPolicy | undefined> {
    return (await this.table.list({ vaultId, name }))[0];
  }

  list(filter: { vaultId?: string } = {}): Promise<ReplicationPolicy[]> {
    return this.table.list(filter);
  }

  update(id: string, patch: Partial<PolicySettings & Pick<ReplicationPolicy, 'name'>>): Promise<ReplicationPolicy> {
    return this.table.update(id, patch);
  }
}
