import type { Command } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import { createComputeDriver } from '../../compute/index.js';
import { startProcessServer, type ProcessServer } from '../../process-server/server.js';
import { DEFAULT_PROCESS_SERVER_PORT, startVaultServer } from '../../vault/server.js';
import { createVaultLogger } from '../../vault/logging/logger.js';
import { emit, parseBytes, type Env, type StoreFlags } from '../context.js';

interface ServerFlags extends StoreFlags {
  dataDir?: string;
  database?: string;
  listen: string;
  processServer: boolean;
  processServerPort: string;
  spoolDir?: string;
  spoolLimit: string;
  compute: string;
}

/** How often the built-in process server's figures are recorded (database rows, spool alert, /metrics). */
const PROCESS_SERVER_REPORT_MS = 5000;

export function register(program: Command, env: Env, signals: AbortSignal): void {
  program
    .command('server')
    .description('run the vault (REST API under /api/v1) and its process server (agents, TLS port 9443) on embedded defaults until interrupted')
    .option('--data-dir <dir>', 'where the vault keeps its state (default $LIFEBOAT_DATA_DIR or ~/.local/share/lifeboat)')
    .option('--database <url>', 'sqlite:///path/vault.db (default, in the data dir) or postgres://user@host/db')
    .option('--listen <host:port>', 'address of the REST API (port 0 picks one)', '127.0.0.1:8720')
    .option('--process-server-port <port>', 'TLS port of the built-in process server, on the --listen host (0 picks one)', String(DEFAULT_PROCESS_SERVER_PORT))
    .option('--no-process-server', 'do not run the built-in process server')
    .option('--spool-dir <dir>', "the process server's spool (default <data dir>/spool)")
    .option('--spool-limit <size>', 'spool size limit (at 100 % agents are told to wait)', '10G')
    .option('--compute <driver>', 'how recovered machines run: qemu (boots them here), export (writes their disks as image files) or auto (qemu when installed)', 'auto')
    .action(async (opts: ServerFlags) => {
      const m = /^(.*):(\d+)$/.exec(opts.listen);
      if (!m) throw new LifeboatError('USAGE', '--listen must be HOST:PORT');
      const psPort = Number(opts.processServerPort);
      if (!Number.isSafeInteger(psPort) || psPort < 0 || psPort > 65535) throw new LifeboatError('USAGE', '--process-server-port must be a port number (0 picks one)');
      const spoolLimitBytes = parseBytes(opts.spoolLimit);
      if (opts.compute !== 'qemu' && opts.compute !== 'export' && opts.compute !== 'auto') throw new LifeboatError('USAGE', '--compute must be qemu, export or auto');
      const dataDir = opts.dataDir ?? env.env.LIFEBOAT_DATA_DIR ?? join(homedir(), '.local', 'share', 'lifeboat');
      const host = (m[1] as string).replace(/^\[|\]$/g, '');
      // Agents reach the process server at the public URL's host when one is set (docs/push-install.md), else at the listen host.
      const publicHost = env.env.LIFEBOAT_PUBLIC_URL ? new URL(env.env.LIFEBOAT_PUBLIC_URL).hostname.replace(/^\[|\]$/g, '') : undefined;
      const advertisedHost = publicHost ?? (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host);
      const logger = createVaultLogger({ env: env.env, destination: env.stderr });
      const server = await startVaultServer({
        dataDir,
        databaseUrl: opts.database ?? env.env.LIFEBOAT_DATABASE_URL,
        host,
        port: Number(m[2]),
        // "Enable protection" push-installs over SSH (port 22); agent.env names LIFEBOAT_PUBLIC_URL when set (docs/push-install.md).
        pushInstall: env.env.LIFEBOAT_PUBLIC_URL ? { vaultUrl: env.env.LIFEBOAT_PUBLIC_URL } : {},
        // JSON lines on stderr, level from LIFEBOAT_LOG_LEVEL (docs/logging.md); stdout keeps the URL and token.
        logger,
        compute: await createComputeDriver(opts.compute, { stateDir: join(dataDir, 'compute') }),
      });
      let processServer: ProcessServer | undefined;
      let report: NodeJS.Timeout | undefined;
      try {
        if (opts.processServer) {
          const sans = [...new Set([advertisedHost, host, '127.0.0.1', 'localhost'].filter((h) => h !== '0.0.0.0' && h !== '::'))];
          processServer = await startProcessServer({
            host,
            port: psPort,
            tls: await server.processServerTls(sans),
            spoolDir: opts.spoolDir ?? join(dataDir, 'spool'),
            spoolLimitBytes,
            backend: server.processServerBackend,
            now: () => Date.now(),
            logger: logger.child({ component: 'process-server' }),
          });
          const address = `${advertisedHost.includes(':') ? `[${advertisedHost}]` : advertisedHost}:${processServer.port}`;
          server.setProcessServerEndpoint({ host: advertisedHost, port: processServer.port, serverName: advertisedHost });
          const ps = processServer;
          const tick = (): void => {
            server.reportProcessServer(ps.stats(), address).catch((err: unknown) => logger.error({ err }, 'process server report failed'));
          };
          tick();
          report = setInterval(tick, PROCESS_SERVER_REPORT_MS);
          report.unref();
        }
      } catch (err) {
        await server.close();
        throw err;
      }
      emit(
        opts,
        env,
        {
          url: server.url,
          api: `${server.url}/api/v1`,
          openapi: `${server.url}/api/docs`,
          portal: `${server.url}/`,
          dataDir,
          adminToken: server.initialAdminToken ?? null,
          processServerPort: processServer?.port ?? null,
        },
        [
          `vault listening at ${server.url} (API ${server.url}/api/v1, OpenAPI ${server.url}/api/docs); state in ${dataDir}`,
          `portal: ${server.url}/`,
          processServer ? `process server listening on ${host}:${processServer.port} (TLS; agents use ${advertisedHost}:${processServer.port})` : 'no process server (--no-process-server)',
          server.initialAdminToken
            ? `admin token (shown once, keep it safe): ${server.initialAdminToken}`
            : 'the admin token was shown at the first start; an owner can create more with POST /api/v1/tokens',
          'set a password for the portal: lifeboat user set-password admin',
        ].join('\n'),
      );
      await new Promise<void>((resolve) => {
        if (signals.aborted) resolve();
        signals.addEventListener('abort', () => resolve(), { once: true });
      });
      if (report) clearInterval(report);
      await processServer?.close();
      await server.close();
    });
}
