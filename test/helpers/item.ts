/**
 * A replicated item straight in the vault's database, with the configuration server,
 * machine and policy it needs: what "Enable protection" would have made, for tests
 * that start from an item (an agent enrolls for it, or a recovery operation runs on it).
 */
import type { ItemState, ReplicatedItem } from '../../src/core/model.js';
import type { Repositories } from '../../src/vault/db/repositories/index.js';

export interface SeedItemOptions {
  /** The machine's and the compute target's name; default 'web'. */
  readonly name?: string;
  /** Default 'initial-replication' (an agent may enroll and replicate). */
  readonly state?: ItemState;
  /** Default none: the agent's first heartbeat reports them. */
  readonly disks?: ReplicatedItem['disks'];
  /** The policy's cut interval; default 1 s. */
  readonly crashConsistentFrequencySeconds?: number;
  /** Default 1. */
  readonly generation?: number;
}

export async function seedItem(repos: Repositories, vaultId: string, options: SeedItemOptions = {}): Promise<{ item: ReplicatedItem; machineId: string }> {
  const name = options.name ?? 'web';
  const cs = await repos.configServers.create({ vaultId, name: 'cs', address: '10.0.0.1', version: '0.1.0' });
  const machine = await repos.machines.create({ configServerId: cs.id, name, privateIp: '10.0.0.9', os: 'debian-12', supported: true });
  const policy = await repos.policies.create({
    vaultId,
    name: 'fast',
    rpoThresholdSeconds: 60,
    retentionHours: 24,
    appConsistentFrequencyMinutes: 0,
    crashConsistentFrequencySeconds: options.crashConsistentFrequencySeconds ?? 1,
  });
  const created = await repos.items.create({
    vaultId,
    machineId: machine.id,
    policyId: policy.id,
    state: options.state ?? 'initial-replication',
    compute: { targetName: name, size: 'small', network: null, subnet: null, ip: null },
    disks: options.disks ?? [],
  });
  const item = await repos.items.update(created.id, { generation: options.generation ?? 1 });
  return { item, machineId: machine.id };
}
