import { randomBytes } from 'node:crypto';
import { closeSync, createWriteStream, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, type WriteStream } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeFileAtomic } from '../../agent/state.js';
import { createComputeDriver } from '../../compute/index.js';
import { LifeboatError } from '../../core/errors.js';
import type { ReplicatedItem } from '../../core/model.js';
import { startProcessServer, type ProcessServer } from '../../process-server/server.js';
import { createVaultLogger, type VaultLogger } from '../../vault/logging/logger.js';
import { startVaultServer, type VaultServer } from '../../vault/server.js';
import { ApiClient } from '../api-client.js';

/** The sample machines: `sample` is protected by the first start, `sample-2` is left for "Enable replication" in the portal. */
export const SAMPLE_MACHINES = ['sample', 'sample-2'] as const;
export const PROTECTED_AT_FIRST_START = 'sample';
export const SAMPLE_OS = 'debian-12';
/** The address the vault records for the i-th sample machine (they all run on this host). */
export const sampleIp = (i: number): string => `127.0.0.${i + 2}`;

/** What the first start made, in DIR/quickstart.json (ids only; secrets are files of their own, 0600). */
export interface SiteState {
  readonly version: 1;
  readonly vaultId: string;
  readonly policyId: string;
  readonly configServerId: string;
  /** Machine name → machine id. */
  readonly machines: Readonly<Record<string, string>>;
  /** The built-in process server's port, kept across restarts (0: none chosen yet). */
  readonly processServerPort: number;
}

/** The files of a quickstart directory. */
export function sitePaths(dir: string) {
  return {
    state: join(dir, 'quickstart.json'),
    lock: join(dir, 'quickstart.lock'),
    vault: join(dir, 'vault'),
    log: join(dir, 'vault.log'),
    store: join(dir, 'store'),
    spool: join(dir, 'spool'),
    compute: join(dir, 'compute'),
    storePassphrase: join(dir, 'store-passphrase'),
    storeRecoveryKey: join(dir, 'store-recovery-key'),
    adminPassword: join(dir, 'admin-password'),
    adminToken: join(dir, 'admin-token'),
    configServerCredential: join(dir, 'config-server-credential'),
  } as const;
}

/** The first line of a secret file. */
export function readSecret(path: string): string {
  return (readFileSync(path, 'utf8').split('\n')[0] ?? '').trim();
}

function writeSecret(path: string, value: string): void {
  writeFileAtomic(path, `${value}\n`, 0o600);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes DIR/quickstart.lock (this process's pid), so a second quickstart on the same
 * directory fails at once instead of opening the same database and store. A lock
 * left by a process that is gone (killed) is taken over. Returns the release.
 */
export function lockSite(dir: string): () => void {
  const path = sitePaths(dir).lock;
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
      const pid = Number(readFileSync(path, 'utf8').trim());
      if (Number.isSafeInteger(pid) && pid > 0 && isAlive(pid)) {
        throw new LifeboatError('CONFLICT', `another quickstart (pid ${pid}) is running on ${dir}; stop it (Ctrl-C in its terminal, or kill ${pid}) or pass another --dir`, {
          details: { pid, dir },
          retryable: false,
        });
      }
      rmSync(path, { force: true });
    }
  }
}

export interface SiteOptions {
  readonly dir: string;
  readonly host: string;
  readonly port: number;
  readonly compute: 'qemu' | 'export' | 'auto';
}

/** How often the process server's figures are recorded (as `lifeboat server` does). */
const PROCESS_SERVER_REPORT_MS = 5000;

/**
 * The running all-in-one server of a quickstart directory: the vault (SQLite in
 * DIR/vault, JSON-line logs in DIR/vault.log), its compute driver (state in
 * DIR/compute) and the built-in process server (TLS on the loopback host).
 */
export class Site {
  private constructor(
    readonly dir: string,
    readonly server: VaultServer,
    readonly processServer: ProcessServer,
    readonly logger: VaultLogger,
    private readonly logStream: WriteStream,
    private readonly report: NodeJS.Timeout,
  ) {}

  /** True when DIR holds no quickstart yet (the first start provisions it). */
  static isNew(dir: string): boolean {
    return !existsSync(sitePaths(dir).state);
  }

  static async start(options: SiteOptions): Promise<Site> {
    const paths = sitePaths(options.dir);
    if (Site.isNew(options.dir) && existsSync(paths.vault)) {
      throw new LifeboatError('CONFLICT', `${options.dir} holds a vault but no quickstart.json: an earlier first start did not finish; remove ${options.dir} and run the quickstart again`, { retryable: false });
    }
    const state = Site.isNew(options.dir) ? undefined : readState(options.dir);
    const logStream = createWriteStream(paths.log, { flags: 'a', mode: 0o600 });
    const logger = createVaultLogger({ destination: logStream, level: 'info' });
    const compute = await createComputeDriver(options.compute, { stateDir: paths.compute });
    let server: VaultServer;
    try {
      // RPO sampled every 10 s (a vault's default is a minute): the portal's chart has a shape within minutes.
      server = await startVaultServer({ dataDir: paths.vault, host: options.host, port: options.port, logger, compute, rpoSampleIntervalMs: 10_000 });
    } catch (err) {
      logStream.end();
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new LifeboatError('CONFLICT', `${options.host}:${options.port} is in use (another quickstart or another program); stop it or pass --listen HOST:PORT (port 0 picks one)`, { retryable: false });
      }
      throw err;
    }
    try {
      const tls = await server.processServerTls([...new Set([options.host, '127.0.0.1', 'localhost'].filter((h) => h !== '0.0.0.0' && h !== '::'))]);
      const start = (port: number): Promise<ProcessServer> =>
        startProcessServer({
          host: options.host,
          port,
          tls,
          spoolDir: paths.spool,
          spoolLimitBytes: 4 * 2 ** 30,
          backend: server.processServerBackend,
          now: () => Date.now(),
          logger: logger.child({ component: 'process-server' }),
        });
      // The same port as before when it is free; else another (agents learn it from their heartbeat's answer).
      const ps = await start(state?.processServerPort ?? 0).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        return start(0);
      });
      // The agents run in this process: they reach the process server on loopback, by a name its certificate holds (TLS takes no IP as server name).
      const advertised = options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host;
      server.setProcessServerEndpoint({ host: advertised, port: ps.port, serverName: isIP(advertised) === 0 ? advertised : 'localhost' });
      const address = `${advertised.includes(':') ? `[${advertised}]` : advertised}:${ps.port}`;
      const tick = (): void => {
        server.reportProcessServer(ps.stats(), address).catch((err: unknown) => logger.error({ err }, 'process server report failed'));
      };
      tick();
      const report = setInterval(tick, PROCESS_SERVER_REPORT_MS);
      report.unref();
      if (state && state.processServerPort !== ps.port) writeState(options.dir, { ...state, processServerPort: ps.port });
      return new Site(options.dir, server, ps, logger, logStream, report);
    } catch (err) {
      await server.close();
      logStream.end();
      throw err;
    }
  }

  /** The vault's REST API as the owner `admin` (its initial token, kept in DIR/admin-token). */
  ownerApi(): ApiClient {
    return new ApiClient({ server: this.server.url, token: readSecret(sitePaths(this.dir).adminToken) });
  }

  /**
   * First start: through the REST API as the new vault's owner, a vault `local` with a
   * local-folder store (passphrase generated), a policy `quickstart`, a configuration
   * server `this-host` registered with a registration key, the sample machines, and
   * "Enable replication" (manual install) of `sample`, and a generated password for
   * `admin` (kept in DIR/admin-password, 0600, so a restart prints it again; set only
   * here, so a password changed in the portal stays). Writes quickstart.json last:
   * a start that failed before it is not mistaken for a site.
   */
  async provision(): Promise<SiteState> {
    const paths = sitePaths(this.dir);
    const owner = this.server.initialAdminToken;
    if (owner === undefined) throw new LifeboatError('CONFLICT', `the vault in ${paths.vault} is not new`, { retryable: false });
    // The owner's initial token stays in DIR/admin-token (0600) for this command's own calls
    // after a restart: the supervisor enrolls agents and heartbeats as this host. It opens no
    // more than DIR/admin-password already does, and both live in the same private directory.
    writeSecret(paths.adminToken, owner);
    const api = this.ownerApi();
    const password = randomBytes(12).toString('base64url');
    writeSecret(paths.adminPassword, password);
    await setAdminPassword(api, password);
    const passphrase = randomBytes(24).toString('base64url');
    writeSecret(paths.storePassphrase, passphrase);
    const vault = await api.post<{ id: string; storeRecoveryKey?: string }>('/api/v1/vaults', {
      name: 'local',
      location: 'this host',
      storeUrl: pathToFileURL(paths.store).href,
      storePassphrase: passphrase,
    });
    if (vault.storeRecoveryKey !== undefined) writeSecret(paths.storeRecoveryKey, vault.storeRecoveryKey);
    const policy = await api.post<{ id: string }>('/api/v1/policies', {
      vaultId: vault.id,
      name: 'quickstart',
      rpoThresholdSeconds: 120,
      retentionHours: 24,
      appConsistentFrequencyMinutes: 0,
      crashConsistentFrequencySeconds: 10,
    });
    const key = await api.post<{ key: string }>(`/api/v1/vaults/${vault.id}/registration-keys`, {});
    const registered = await new ApiClient({ server: this.server.url, token: '' }).post<{ server: { id: string }; credential: string }>('/api/v1/config-servers/register', {
      registrationKey: key.key,
      name: 'this-host',
      address: '127.0.0.1',
      version: '0.1.0',
      clock: new Date().toISOString(),
    });
    writeSecret(paths.configServerCredential, registered.credential);
    const machines: Record<string, string> = {};
    for (const [i, name] of SAMPLE_MACHINES.entries()) {
      const m = await api.post<{ id: string }>('/api/v1/machines', { configServerId: registered.server.id, name, privateIp: sampleIp(i), os: SAMPLE_OS });
      machines[name] = m.id;
    }
    const state: SiteState = { version: 1, vaultId: vault.id, policyId: policy.id, configServerId: registered.server.id, machines, processServerPort: this.processServer.port };
    await api.post('/api/v1/replication/enable', {
      vaultId: vault.id,
      policyId: policy.id,
      configServerId: registered.server.id,
      install: 'manual',
      machines: [machines[PROTECTED_AT_FIRST_START]],
    });
    writeState(this.dir, state);
    return state;
  }

  /** The items of the sample machines, by machine name. */
  async sampleItems(api: ApiClient, state: SiteState): Promise<Map<string, ReplicatedItem>> {
    const byMachine = new Map(Object.entries(state.machines).map(([name, id]) => [id, name]));
    const out = new Map<string, ReplicatedItem>();
    for (const item of await api.all<ReplicatedItem>('/api/v1/items')) {
      const name = byMachine.get(item.machineId);
      if (name !== undefined) out.set(name, item);
    }
    return out;
  }

  /**
   * Stops the process server and the vault, then destroys every machine the compute
   * driver still holds: QEMU runs detached and would outlive this process otherwise.
   */
  async close(): Promise<void> {
    clearInterval(this.report);
    await this.processServer.close();
    await this.server.close();
    const compute = this.server.compute;
    for (const m of await compute.list()) await compute.destroy(m.id);
    await new Promise<void>((resolve) => this.logStream.end(resolve));
  }
}

export function readState(dir: string): SiteState {
  const path = sitePaths(dir).state;
  const raw = JSON.parse(readFileSync(path, 'utf8')) as SiteState;
  if (raw.version !== 1) throw new LifeboatError('CONFIG_INVALID', `${path} has version ${String(raw.version)}; this Lifeboat reads version 1`);
  return raw;
}

function writeState(dir: string, state: SiteState): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(sitePaths(dir).state, `${JSON.stringify(state, null, 2)}\n`, 0o600);
}

/** Gives `admin` a password for the portal's sign-in (PUT /api/v1/users/:id/password, `manage-users`). */
export async function setAdminPassword(api: ApiClient, password: string): Promise<void> {
  const users = await api.all<{ id: string; name: string }>('/api/v1/users');
  const admin = users.find((u) => u.name === 'admin');
  if (!admin) throw new LifeboatError('NOT_FOUND', 'the vault has no user admin');
  await api.request('PUT', `/api/v1/users/${admin.id}/password`, { password });
}
