import type { Command } from 'commander';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Agent, type AgentEvent } from '../../agent/agent.js';
import { parseAgentFileConfig, type DiskSpec } from '../../agent/config.js';
import { enroll } from '../../agent/enroll.js';
import { replicationTransport } from '../../agent/replication-transport.js';
import { StateDir } from '../../agent/state.js';
import { registryTrackers } from '../../agent/trackers.js';
import { HttpVaultClient } from '../../agent/vault-client.js';
import { createComputeDriver } from '../../compute/index.js';
import { LifeboatError } from '../../core/errors.js';
import type { DrillReport, Job, ReplicatedItem } from '../../core/model.js';
import { exportImage } from '../../export/index.js';
import { startProcessServer, type ProcessServer } from '../../process-server/server.js';
import { openStorage } from '../../storage/registry.js';
import { backupPath } from '../../store/backup.js';
import { PointReader } from '../../store/point-reader.js';
import { writeDisk } from '../../store/restore.js';
import { Repository } from '../../store/repository.js';
import { verifyStore } from '../../store/verify.js';
import { createVaultLogger, type VaultLogger } from '../../vault/logging/logger.js';
import { startVaultServer, type VaultServer } from '../../vault/server.js';
import { ApiClient } from '../api-client.js';
import { formatBytes, type Env } from '../context.js';

const MiB = 2 ** 20;

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** A sparse sample disk: some random data, some text, the rest unallocated. */
async function writeSampleDisk(path: string, sizeBytes: number): Promise<void> {
  const f = await open(path, 'w');
  await f.truncate(sizeBytes);
  for (let mib = 0; mib < sizeBytes / MiB; mib += 4) {
    const text = Buffer.from(`lifeboat sample block ${mib} `.repeat(60000)).subarray(0, MiB);
    await f.write(mib % 8 === 0 ? randomBytes(MiB) : text, 0, MiB, mib * MiB);
  }
  await f.close();
}

/** Overwrites `count` random 4 KiB blocks: a day's worth of change on the sample disk. */
async function churn(path: string, sizeBytes: number, count: number): Promise<void> {
  const f = await open(path, 'r+');
  for (let i = 0; i < count; i++) await f.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * (sizeBytes / 4096)) * 4096);
  await f.close();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` every 250 ms until it returns a value; TIMEOUT after `timeoutMs`, saying what was awaited. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new LifeboatError('TIMEOUT', `timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(250);
  }
}

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

/** A test failover as it ended: the drill report, and what the compute driver made (machine files) before cleanup. */
export interface DrillResult {
  readonly report: DrillReport;
  readonly job: Job;
  readonly machineFiles: readonly string[];
}

/**
 * The whole product in one process, on embedded defaults: the vault (SQLite, its
 * REST API on loopback, replica processor, compute driver), the built-in process
 * server, a vault with a local-folder store, and agents protecting disk image files
 * with the scan tracker. Used by `lifeboat quickstart` and the recovery benchmark
 * (bench/recovery.ts); everything is driven through the public REST API except the
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
    const { token } = await this.api.post<{ token: string }>(`/api/v1/items/${created.id}/enrollment-token`);
    const config = parseAgentFileConfig({ disks: [{ name: 'sda', tracker: options.tracker ?? { kind: 'scan', path: imagePath } }] });
    const stateDir = join(this.dir, 'agents', name);
    await enroll({ vaultUrl: this.server.url, itemId: created.id, token, config, stateDir, vault: new HttpVaultClient(this.server.url) });
    const state = new StateDir(stateDir);
    const identity = state.identity();
    const events: AgentEvent[] = [];
    const agent = new Agent({
      stateDir,
      config,
      vault: new HttpVaultClient(identity.vaultUrl),
      connect: replicationTransport(identity),
      openTracker: registryTrackers(state),
      heartbeatIntervalMs: 1000,
      version: 'quickstart',
      onEvent: (e) => {
        events.push(e);
        options.onEvent?.(e);
      },
    });
    const stopping = new AbortController();
    let failed: unknown;
    const running = agent.run(stopping.signal).catch((err: unknown) => void (failed = err));
    const handle: ProtectedImage = {
      itemId: created.id,
      storeDisk: `${created.id}.sda`,
      events,
      stop: async () => {
        stopping.abort();
        await running;
      },
    };
    this.agents.push(handle);
    await until(`${name} to be protected (its first recovery point)`, options.timeoutMs ?? 300_000, async () => {
      if (failed !== undefined) throw failed;
      const item = await this.api.get<ReplicatedItem>(`/api/v1/items/${created.id}`);
      return item.state === 'protected' ? true : undefined;
    });
    return handle;
  }

  /** Resolves with the job once it ended (any state). */
  waitForJob(jobId: string, timeoutMs = 600_000): Promise<Job> {
    return until(`job ${jobId} to end`, timeoutMs, async () => {
      const job = await this.api.get<Job>(`/api/v1/jobs/${jobId}`);
      return job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled' ? job : undefined;
    });
  }

  /** The item's drill reports, newest first. */
  async drillReports(itemId: string): Promise<DrillReport[]> {
    return (await this.api.get<{ items: DrillReport[] }>(`/api/v1/items/${itemId}/drill-reports`)).items;
  }

  /** The drill report a test failover job writes. */
  async reportOf(itemId: string, jobId: string): Promise<DrillReport> {
    const report = (await this.drillReports(itemId)).find((r) => r.jobId === jobId);
    if (!report) throw new LifeboatError('NOT_FOUND', `job ${jobId} wrote no drill report`);
    return report;
  }

  /**
   * Starts a test failover at the newest processed point and waits for its job
   * (which ends once the boot marker and probes of the item's drill settings were
   * checked); notes what the compute driver made, and leaves the test machine in
   * place: `cleanupTestFailover` removes it.
   */
  async testFailover(itemId: string, options: { timeoutMs?: number } = {}): Promise<DrillResult> {
    const started = await this.api.post<Job>(`/api/v1/items/${itemId}/test-failover`, { point: { kind: 'latest-processed' } });
    const job = await this.waitForJob(started.id, options.timeoutMs);
    const report = await this.reportOf(itemId, job.id);
    const machine = report.machineId === null ? undefined : (await this.server.compute.list()).find((m) => m.id === report.machineId);
    return { report, job, machineFiles: machine?.files ?? [] };
  }

  /** Cleans the item's test failover up (machine stopped and destroyed, notes kept); resolves with the final report. */
  async cleanupTestFailover(itemId: string, reportId: string, notes: string): Promise<DrillReport> {
    const job = await this.api.post<Job>(`/api/v1/items/${itemId}/test-failover/cleanup`, { notes });
    const ended = await this.waitForJob(job.id);
    if (ended.state !== 'succeeded') throw new LifeboatError('DRILL_FAILED', `the cleanup of the test failover ${ended.state}: ${ended.error ?? 'no error recorded'}`);
    const report = (await this.drillReports(itemId)).find((r) => r.id === reportId);
    if (!report) throw new LifeboatError('NOT_FOUND', `drill report ${reportId} is gone`);
    return report;
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

/** "12 s", or "-" when the report has no figure. */
function seconds(n: number | null): string {
  return n === null ? '-' : `${n} s`;
}

export function register(program: Command, env: Env): void {
  program
    .command('quickstart')
    .description('walk through Lifeboat on embedded defaults: a local store, a sample disk, two recovery points, verify, restore, export, then a vault protecting the disk and a drill (test failover)')
    .option('--dir <dir>', 'where the store, sample disk, restored images and the vault go', 'lifeboat-quickstart')
    .option('--json', 'print one JSON document at the end instead of the walkthrough')
    .action(async (opts: { dir: string; json?: boolean }) => {
      const dir = resolve(opts.dir);
      mkdirSync(dir, { recursive: true });
      const json = opts.json === true;
      const say = (s: string): void => void (json || env.stdout.write(s + '\n'));
      const doc: Record<string, unknown> = { dir };
      const passFile = join(dir, 'passphrase');
      if (!existsSync(passFile)) writeFileSync(passFile, randomBytes(18).toString('base64url') + '\n', { mode: 0o600 });
      const pass = (readFileSync(passFile, 'utf8').split('\n')[0] as string).trim();
      const storeUrl = `file://${join(dir, 'store')}`;
      const storage = await openStorage(storeUrl);
      const disk = join(dir, 'sample-disk.img');
      const size = 256 * MiB;
      try {
        let repo: Repository;
        if (await storage.stat('config')) {
          repo = await Repository.open(storage, pass);
          say(`store   ${storeUrl} (existing)`);
          doc['store'] = { url: storeUrl, created: false };
        } else {
          const made = await Repository.init(storage, { passphrase: pass });
          repo = made.repo;
          writeFileSync(join(dir, 'recovery-key'), made.recoveryKey + '\n', { mode: 0o600 });
          say(`store   ${storeUrl} created; passphrase in ${passFile}, recovery key in ${join(dir, 'recovery-key')}`);
          doc['store'] = { url: storeUrl, created: true, passphraseFile: passFile, recoveryKeyFile: join(dir, 'recovery-key') };
        }
        if (!existsSync(disk)) await writeSampleDisk(disk, size);
        const first = await backupPath(repo, disk, { disk: 'sample' });
        say(`point   ${first.manifest.pointId}  read ${formatBytes(first.bytesRead)} of ${formatBytes(size)}, stored ${formatBytes(first.bytesStored)}`);
        const sumFirst = await sha256(disk);
        await churn(disk, size, 512);
        const second = await backupPath(repo, disk, { disk: 'sample' });
        say(`point   ${second.manifest.pointId}  after 512 random 4 KiB writes: stored ${formatBytes(second.bytesStored)} (${second.newChunks} new chunks)`);
        doc['points'] = [
          { pointId: first.manifest.pointId, bytesRead: first.bytesRead, bytesStored: first.bytesStored },
          { pointId: second.manifest.pointId, bytesStored: second.bytesStored, newChunks: second.newChunks },
        ];
        const sumSecond = await sha256(disk);
        const report = await verifyStore(repo, { full: true });
        say(`verify  ${report.ok ? 'ok' : 'PROBLEMS'}: ${report.points} points, ${report.packs} packs, ${formatBytes(report.bytesRead)} read and authenticated`);
        doc['verify'] = { ok: report.ok, points: report.points, packs: report.packs, bytesRead: report.bytesRead };
        const restores: { pointId: string; path: string; identical: boolean }[] = [];
        for (const [m, expected] of [[first.manifest, sumFirst], [second.manifest, sumSecond]] as const) {
          const out = join(dir, `restored-${m.pointId}.img`);
          const reader = await PointReader.open(repo, m);
          await writeDisk(reader, out).finally(() => reader.close());
          const same = (await sha256(out)) === expected;
          restores.push({ pointId: m.pointId, path: out, identical: same });
          say(`restore ${m.pointId} -> ${out}: ${same ? 'identical to the disk at backup time (sha256)' : 'MISMATCH'}`);
          if (!same) throw new Error('restore mismatch');
        }
        doc['restores'] = restores;
        const vhd = join(dir, 'sample.vhd');
        const reader = await PointReader.open(repo, second.manifest);
        await exportImage(reader, { format: 'vhd', path: vhd }).finally(() => reader.close());
        say(`export  ${vhd} (dynamic VHD)`);
        doc['export'] = { path: vhd, format: 'vhd' };
      } finally {
        await storage.close();
      }

      // The drill: the same sample disk protected by a vault and an agent, then a test failover of it.
      const drill = await runDrill(join(dir, 'drill'), disk, say);
      doc['drill'] = drill;
      if (json) {
        env.stdout.write(JSON.stringify(doc, null, 2) + '\n');
        return;
      }
      say('');
      say('Next: run the vault and protect a real machine (README, "The vault"); drills, failover and failback in docs/recovery.md.');
    });
}

/**
 * Starts an all-in-one vault on `dir` (compute `auto`: QEMU when installed, else
 * export), protects the sample disk with an in-process agent, runs a test failover
 * of it at the newest point and cleans it up. The sample disk does not boot: no
 * boot marker and no probes are set, so under QEMU "booted" means "started".
 */
async function runDrill(dir: string, disk: string, say: (s: string) => void): Promise<Record<string, unknown>> {
  const all = await AllInOne.start({ dir, compute: 'auto' });
  const compute = all.server.compute;
  try {
    say(`vault   ${all.server.url} (all-in-one, data in ${dir}); compute driver: ${compute.name}`);
    const started = Date.now();
    const sample = await all.protect('sample', disk);
    const cuts = sample.events.filter((e) => e.event === 'cut-committed').length;
    say(`agent   sample machine protected in ${((Date.now() - started) / 1000).toFixed(1)} s (${cuts} cut${cuts === 1 ? '' : 's'} shipped)`);
    const result = await all.testFailover(sample.itemId);
    const r = result.report;
    const point = r.point?.disks.map((d) => `${d.pointId} (${d.disk}, captured ${d.capturedAt})`).join(', ') ?? '-';
    say(`drill   test failover of the sample machine: ${r.outcome}${r.error ? ` (${r.error})` : ''}`);
    say(`        point ${point}`);
    say(`        RPO ${seconds(r.rpoSeconds)}, ${r.rtoSeconds === null ? 'no boot (the driver exports files)' : `RTO ${seconds(r.rtoSeconds)}`}, driver ${r.driver}${r.accel ? ` (${r.accel})` : ''}, network ${r.network}`);
    if (!compute.capabilities.boots && result.machineFiles.length > 0) say(`        exported ${result.machineFiles.join(', ')} (removed by the cleanup)`);
    if (r.notes) say(`        ${r.notes}`);
    const cleaned = await all.cleanupTestFailover(sample.itemId, r.id, 'quickstart drill');
    const left = await compute.list();
    if (left.length > 0) throw new LifeboatError('COMPUTE_FAILED', `the cleanup left machines behind: ${left.map((m) => m.id).join(', ')}`);
    say(`cleanup test machine removed; drill report ${cleaned.id} kept in the vault`);
    if (r.outcome !== 'passed') throw new LifeboatError('DRILL_FAILED', `the quickstart drill ${r.outcome}: ${r.error ?? 'no error recorded'}`);
    return { vaultUrl: all.server.url, itemId: sample.itemId, computeDriver: compute.name, report: cleaned, machineFiles: result.machineFiles, machinesLeft: left.length };
  } finally {
    await all.close();
  }
}
