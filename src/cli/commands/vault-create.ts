import type { Command } from 'commander';
import type { Vault } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, secret, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields } from '../table.js';

export function vaultFields(v: Vault): string {
  return fields([
    ['id', v.id],
    ['name', v.name],
    ['location', v.location],
    ['store', v.storeUrl],
    ['recovery network', v.recoveryNetwork],
    ['created', v.createdAt],
  ]);
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'create <name>', 'create a vault and choose its target store (seed step 2)')
    .requiredOption('--location <location>', 'where the vault is (region or site name)')
    .requiredOption('--store <url>', 'target store URL: file:///path, azblob://account/container, s3://bucket/prefix')
    .option('--recovery-network <network>', 'the network failed-over machines join')
    .option(
      '--passphrase-file <file>',
      'the store passphrase, first line of this file: the vault keeps it sealed and initialises the store if it has none (replication needs it)',
    )
    .action(async (name: string, opts: ApiFlags & { location: string; store: string; recoveryNetwork?: string; passphraseFile?: string }) => {
      const body = {
        name,
        location: opts.location,
        storeUrl: opts.store,
        ...(opts.recoveryNetwork ? { recoveryNetwork: opts.recoveryNetwork } : {}),
        ...(opts.passphraseFile ? { storePassphrase: secret({ passphraseFile: opts.passphraseFile }, env) } : {}),
      };
      const vault = await connect(opts, env).post<Vault & { storeRecoveryKey?: string }>('/api/v1/vaults', body);
      const { storeRecoveryKey, ...shown } = vault;
      emit(
        opts,
        env,
        vault,
        [
          `created vault ${vault.name}`,
          vaultFields(shown),
          ...(storeRecoveryKey
            ? ['', 'The vault created the store. Recovery key (opens the store if the passphrase is lost; shown only now, keep it offline):', `  ${storeRecoveryKey}`]
            : []),
        ].join('\n'),
      );
    });
}
