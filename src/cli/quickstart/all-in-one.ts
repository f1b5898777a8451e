import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AgentEvent } from '../../agent/agent.js';
import type { DiskSpec } from '../../agent/config.js';
import { createComputeDriver } from '../../compute/index.js';
import { LifeboatError } from '../../core/errors.js';
import type { DrillReport, Job, ReplicatedItem } from '../../core/model.js';
import { startProcessServer, type ProcessServer } from '../../process-server/server.js';
import { createVaultLogger, type VaultLogger } from '../../vault/logging/logger.js';
import { startVaultServer, type VaultServer } from '../../vault/server.js';
import { ApiClient } from '../api-client.js';
import { enrollImage, imageConfig, startAgent, type InProcessAgent } from './agents.js';
import { cleanupTestFailover, drillReports, reportOf, testFailover, waitForJob, type DrillResult } from './drill.js';
import { until } from './wait.js';

export type { DrillResult };

export interface AllInOneOptions {
  /** Holds the vault (`vault/`), its store (`store/`), the process server's spool and the agents' state; wiped first. */
  readonly dir: string;
  /** The compute driver (createComputeDriver), its state in a short temporary directory (see start()). */
  readonly compute: 'qemu' | 'export' | 'auto';
  /** Default: warnings and errors only, JSON lines on stderr. */
  readonly logger?: VaultLogger;
  /** The policy's crash-consistent cut interval (default 5 s). */
  readonly cutEverySeconds?: number;
}

export interface ProtectedImage {
  readonly itemId: string;
  /** The store's name of the disk (`<itemId>.<disk>`). */
  readonly storeDisk: string;
  readonly events: readonly AgentEvent[];
  /** Stops the agent (like SIGTERM) and waits for it. */
  stop(): Promise<void>;
}

/**
 * The whole product in one process, on embedded defaults: the vault (SQLite, its
 * REST API on loopback, replica processor, compute driver), the built-in process
 * server, a vault with a local-folder store, and agents protecting disk image files
 * with the scan tracker, on a fresh directory each time. Used by the recovery
 * benchmark (bench/recovery.ts; `lifeboat quickstart` keeps its site across
 * restarts: src/cli/quickstart/site.ts); everything is driven through the public REST API except the
 * items' creation, which stands in for "enable protection" of a machine on this host.
 */
export class AllInOne {
  private readonly agents: ProtectedImage[] = [];
  private machines = 0;

  private constructor(
    readonly server: VaultServer,
    private readonly processServer: ProcessServer,
    private readonly dir: string,
    private readonly computeDir: string,
    /** The vault's REST API as its owner. */
    readonly api: ApiClient,
    readonly vaultId: string,
    private readonly policyId: string,
  ) {}

  static async start(options: AllInOneOptions): Promise<AllInOne> {
    const dir = resolve(options.dir);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const logger = options.logger ?? createVaultLogger({ level: 'warn' });
    // The qemu driver's sockets live in its state directory and a Unix socket path has at most
    // 107 bytes: a short directory of its own, removed by close(), whatever `dir` is.
    const computeDir = mkdtempSync(join(tmpdir(), 'lb-compute-'));
    const compute = await createComputeDriver(options.compute, { stateDir: computeDir });
    let server: VaultServer;
    try {
      server = await startVaultServer({ dataDir: join(dir, 'vault'), host: '127.0.0.1', port: 0, logger, compute });
    } catch (err) {
      rmSync(computeDir, { recursive: true, force: true });
      throw err;
    }
    let ps: ProcessServer | undefined;
    try {
      ps = await startProcessServer({
        host: '127.0.0.1',
        port: 0,
        tls: await server.processServerTls(['127.0.0.1', 'localhost']),
        spoolDir: join(dir, 'spool'),
        spoolLimitBytes: 4 * 2 ** 30,
        backend: server.processServerBackend,
        logger: logger.child({ component: 'process-server' }),
      });
      server.setProcessServerEndpoint({ host: '127.0.0.1', port: ps.port, serverName: 'localhost' });
      const owner = server.initialAdminToken;
      if (owner === undefined) throw new LifeboatError('CONFLICT', `the vault in ${join(dir, 'vault')} is not new`);
      const passphrase = randomBytes(18).toString('base64url');
      const api = new ApiClient({ server: server.url, token: owner });
      const vault = await api.post<{ id: string }>('/api/v1/vaults', {
        name: 'local',
        location: 'this host',
        storeUrl: pathToFileURL(join(dir, 'store')).href,
        storePassphrase: passphrase,
      });
      const policy = await server.repos.policies.create({
        vaultId: vault.id,
        name: 'quick',
        rpoThresholdSeconds: 120,
        retentionHours: 24,
        appConsistentFrequencyMinutes: 0,
        crashConsistentFrequencySeconds: options.cutEverySeconds ?? 5,
      });
      return new AllInOne(server, ps, dir, computeDir, api, vault.id, policy.id);
    } catch (err) {
      await ps?.close();
      await server.close();
      rmSync(computeDir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Protects an image file: a machine and a replicated item for it (as "enable
   * protection" with a manual install leaves them), the agent enrolled with a
   * one-time token and run in this process; resolves once the item is protected
   * (its first recovery point made).
   */
  async protect(name: string, imagePath: string, options: { tracker?: DiskSpec['tracker']; timeoutMs?: number; onEvent?: (e: AgentEvent) => void } = {}): Promise<ProtectedImage> {
    const repos = this.server.repos;
    const n = ++this.machines;
    const cs = (await repos.configServers.list()).find((s) => s.vaultId === this.vaultId) ?? (await repos.configServers.create({ vaultId: this.vaultId, name: 'this-host', address: '127.0.0.1', version: '0.1.0' }));
    const machine = await repos.machines.create({ configServerId: cs.id, name, privateIp: `127.0.0.${n + 1}`, os: 'debian-12', supported: true });
    const created = await repos.items.create({
      vaultId: this.vaultId,
      machineId: machine.id,
      policyId: this.policyId,
      state: 'initial-replication',
      compute: { targetName: name, size: 'small', network: null, subnet: null, ip: null },
      disks: [],
    });
    await repos.items.update(created.id, { generation: 1 });
    const config = imageConfig(imagePath, options.tracker);
    const stateDir = join(this.dir, 'agents', name);
    await enrollImage(this.api, this.server.url, created.id, stateDir, config);
    const agent: InProcessAgent = startAgent({ stateDir, config, vaultUrl: this.server.url, version: 'quickstart', ...(options.onEvent ? { onEvent: options.onEvent } : {}) });
    const handle: ProtectedImage = { itemId: created.id, storeDisk: `${created.id}.sda`, events: agent.events, stop: () => agent.stop() };
    this.agents.push(handle);
    await until(`${name} to be protected (its first recovery point)`, options.timeoutMs ?? 300_000, async () => {
      if (agent.failure !== undefined) throw agent.failure;
      const item = await this.api.get<ReplicatedItem>(`/api/v1/items/${created.id}`);
      return item.state === 'protected' ? true : undefined;
    });
    return handle;
  }

  /** Resolves with the job once it ended (any state). */
  waitForJob(jobId: string, timeoutMs = 600_000): Promise<Job> {
    return waitForJob(this.api, jobId, timeoutMs);
  }

  /** The item's drill reports, newest first. */
  drillReports(itemId: string): Promise<DrillReport[]> {
    return drillReports(this.api, itemId);
  }

  /** The drill report a test failover job writes. */
  reportOf(itemId: string, jobId: string): Promise<DrillReport> {
    return reportOf(this.api, itemId, jobId);
  }

  /** A test failover at the newest processed point, left in place (drill.ts testFailover). */
  testFailover(itemId: string, options: { timeoutMs?: number } = {}): Promise<DrillResult> {
    return testFailover(this.api, this.server.compute, itemId, options);
  }

  /** Cleans the item's test failover up (machine stopped and destroyed, notes kept); resolves with the final report. */
  cleanupTestFailover(itemId: string, reportId: string, notes: string): Promise<DrillReport> {
    return cleanupTestFailover(this.api, itemId, reportId, notes);
  }

  /**
   * Stops the agents, the process server and the vault, then destroys every machine
   * the compute driver still holds: QEMU runs detached and would outlive this process
   * (and keep its event loop alive through the driver's sockets) otherwise.
   */
  async close(): Promise<void> {
    await Promise.all(this.agents.map((a) => a.stop()));
    await this.processServer.close();
    await this.server.close();
    const compute = this.server.compute;
    for (const m of await compute.list()) await compute.destroy(m.id);
    rmSync(this.computeDir, { recursive: true, force: true });
  }
}

