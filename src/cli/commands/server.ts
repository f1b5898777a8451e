import type { Command } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import { startVaultServer } from '../../vault/server.js';
import { createVaultLogger } from '../../vault/logging/logger.js';
import { emit, type Env, type StoreFlags } from '../context.js';

interface ServerFlags extends StoreFlags {
  dataDir?: string;
  database?: string;
  listen: string;
}

export function register(program: Command, env: Env, signals: AbortSignal): void {
  program
    .command('server')
    .description('run the vault (REST API under /api/v1) on embedded defaults until interrupted')
    .option('--data-dir <dir>', 'where the vault keeps its state (default $LIFEBOAT_DATA_DIR or ~/.local/share/lifeboat)')
    .option('--database <url>', 'sqlite:///path/vault.db (default, in the data dir) or postgres://user@host/db')
    .option('--listen <host:port>', 'address of the REST API (port 0 picks one)', '127.0.0.1:8720')
    .action(async (opts: ServerFlags) => {
      const m = /^(.*):(\d+)$/.exec(opts.listen);
      if (!m) throw new LifeboatError('USAGE', '--listen must be HOST:PORT');
      const dataDir = opts.dataDir ?? env.env.LIFEBOAT_DATA_DIR ?? join(homedir(), '.local', 'share', 'lifeboat');
      const server = await startVaultServer({
        dataDir,
        databaseUrl: opts.database ?? env.env.LIFEBOAT_DATABASE_URL,
        host: (m[1] as string).replace(/^\[|\]$/g, ''),
        port: Number(m[2]),
        // "Enable protection" push-installs over SSH (port 22); agent.env names LIFEBOAT_PUBLIC_URL when set (docs/push-install.md).
        pushInstall: env.env.LIFEBOAT_PUBLIC_URL ? { vaultUrl: env.env.LIFEBOAT_PUBLIC_URL } : {},
        // JSON lines on stderr, level from LIFEBOAT_LOG_LEVEL (docs/logging.md); stdout keeps the URL and token.
        logger: createVaultLogger({ env: env.env, destination: env.stderr }),
      });
      emit(
        opts,
        env,
        { url: server.url, api: `${server.url}/api/v1`, openapi: `${server.url}/api/docs`, dataDir, adminToken: server.initialAdminToken ?? null },
        [
          `vault listening at ${server.url} (API ${server.url}/api/v1, OpenAPI ${server.url}/api/docs); state in ${dataDir}`,
          server.initialAdminToken
            ? `admin token (shown once, keep it safe): ${server.initialAdminToken}`
            : 'the admin token was shown at the first start; an owner can create more with POST /api/v1/tokens',
        ].join('\n'),
      );
      await new Promise<void>((resolve) => {
        if (signals.aborted) resolve();
        signals.addEventListener('abort', () => resolve(), { once: true });
      });
      await server.close();
    });
}
