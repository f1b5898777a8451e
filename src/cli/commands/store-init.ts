import type { Command } from 'commander';
import { Repository } from '../../store/repository.js';
import { emit, parseBytes, secret, withStorage, type Env, type StoreFlags } from '../context.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('init')
    .description('create an encrypted store at --store; prints the recovery key once')
    .option('--chunk-size <bytes>', 'chunk size, a power of two from 4K to 4M', '4K')
    .action(async (opts: StoreFlags & { chunkSize: string }) => {
      const pass = secret(opts, env);
      await withStorage(opts, env, async (storage) => {
        const { repo, recoveryKey } = await Repository.init(storage, { passphrase: pass, chunkSizeBytes: parseBytes(opts.chunkSize) });
        emit(
          opts,
          env,
          { storeId: repo.config.storeId, url: storage.url, chunkSizeBytes: repo.chunkSizeBytes, recoveryKey },
          [
            `created store ${repo.config.storeId} at ${storage.url} (chunk size ${repo.chunkSizeBytes} bytes)`,
            '',
            'Recovery key (opens the store if the passphrase is lost; shown only now, keep it offline):',
            `  ${recoveryKey}`,
          ].join('\n'),
        );
      });
    });
}
