import type { Command } from 'commander';
import type { ReplicationPolicy } from '../../core/model.js';
import { LifeboatError } from '../../core/errors.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, parseDuration, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields, seconds } from '../table.js';

export function policyFields(p: ReplicationPolicy): string {
  return fields([
    ['id', p.id],
    ['name', p.name],
    ['vault', p.vaultId],
    ['RPO threshold', seconds(p.rpoThresholdSeconds)],
    ['retention', `${p.retentionHours}h`],
    ['app-consistent', p.appConsistentFrequencyMinutes === 0 ? 'off' : seconds(p.appConsistentFrequencyMinutes * 60)],
    ['crash-consistent', seconds(p.crashConsistentFrequencySeconds)],
    ['created', p.createdAt],
  ]);
}

function whole(text: string, unitMs: number, unit: string, flag: string): number {
  const ms = parseDuration(text);
  if (ms % unitMs !== 0) throw new LifeboatError('USAGE', `${flag} must be a whole number of ${unit}, got ${text}`);
  return ms / unitMs;
}

interface PolicyFlags extends ApiFlags {
  vault: string;
  rpoThreshold?: string;
  retention?: string;
  appConsistent?: string;
  crashConsistent?: string;
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'create <name>', 'create a replication policy (seed step 5); settings left out take the server\'s defaults')
    .requiredOption('--vault <vault>', 'the vault, by id or name')
    .option('--rpo-threshold <duration>', 'alert when an item\'s RPO exceeds this, e.g. 15m')
    .option('--retention <duration>', 'keep recovery points this long, whole hours, e.g. 24h')
    .option('--app-consistent <duration|off>', 'app-consistent snapshot frequency, whole minutes, e.g. 4h, or off')
    .option('--crash-consistent <duration>', 'crash-consistent snapshot frequency, e.g. 5m')
    .action(async (name: string, opts: PolicyFlags) => {
      const settings = {
        ...(opts.rpoThreshold ? { rpoThresholdSeconds: whole(opts.rpoThreshold, 1000, 'seconds', '--rpo-threshold') } : {}),
        ...(opts.retention ? { retentionHours: whole(opts.retention, 3_600_000, 'hours', '--retention') } : {}),
        ...(opts.appConsistent
          ? { appConsistentFrequencyMinutes: opts.appConsistent === 'off' ? 0 : whole(opts.appConsistent, 60_000, 'minutes', '--app-consistent') }
          : {}),
        ...(opts.crashConsistent ? { crashConsistentFrequencySeconds: whole(opts.crashConsistent, 1000, 'seconds', '--crash-consistent') } : {}),
      };
      const client = connect(opts, env);
      const vaultId = await resolveRef(client, '/api/v1/vaults', 'vault', opts.vault);
      const policy = await client.post<ReplicationPolicy>('/api/v1/policies', { vaultId, name, ...settings });
      emit(opts, env, policy, `created policy ${policy.name}\n${policyFields(policy)}`);
    });
}
