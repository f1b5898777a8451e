/**
 * The whole replication path as real processes, for fault tests (kill -9, storage
 * outage, cut network): `lifeboat server` (vault + built-in process server, fs store,
 * fixed loopback ports so a restart comes back where the agent looks) and
 * `lifeboat agent run` (journal tracker over a sparse image, its writable NBD export
 * on a Unix socket); optionally a standalone `lifeboat process-server run` the item is
 * enabled with. Everything is set up through the REST API, as an operator would:
 * vault with a store passphrase, policy, registration key and configuration server,
 * machine, "Enable replication" with a manual install, enrollment token; the agent
 * enrolls itself on its first start.
 *
 * A RecordWriter drives the disk through the agent's NBD export (write + flush per
 * record: acknowledged only when durable), reconnecting whenever the export goes away
 * (a killed agent); a record whose write failed stays in flight and is written again,
 * which is what verifyImage's prefix check expects.
 *
 * Points are read straight from the store (opened with the vault's passphrase, as
 * `lifeboat point list` would), restored with PointReader and checked with verifyImage
 * against the records acknowledged before the point's capture time: the agent's cut
 * clock and the writer's acknowledgments are the same machine clock.
 *
 * The CLI runs from source (`node --import tsx test/agent/lifeboat-cli.ts`), so the
 * processes under test are the working tree's code whatever state dist/ is in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { AgentEvent } from '../../src/agent/agent.js';
import type { PointManifest } from '../../src/format/manifest.js';
import { NbdClient } from '../../src/nbd/client.js';
import { openStorage } from '../../src/storage/registry.js';
import { PointReader } from '../../src/store/point-reader.js';
import { Repository } from '../../src/store/repository.js';
import { verifyStore, type VerifyReport } from '../../src/store/verify.js';
import { freePort, makeTempDir, repoRoot } from '../helpers/env.js';
import { RECORD_BYTES, RecordWriter, inspectImage, verifyImage, type AckLog, type ImageReport } from '../helpers/workload.js';

export const MiB = 2 ** 20;
const CLI = join(repoRoot, 'test', 'agent', 'lifeboat-cli.ts');
const PASSPHRASE = 'replication-fault-Passphrase-57';
const DISK_NAME = 'sda';

// ---------------------------------------------------------------------------
// Child processes

/** One run of a child process: its output (kept, and appended to `logPath`), its exit. */
export class ChildRun {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logPath: string,
  ) {
    appendFileSync(logPath, `\n==== ${name} pid ${child.pid ?? '?'} started ${new Date().toISOString()}\n`);
    child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString('utf8');
      appendFileSync(logPath, d);
    });
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString('utf8');
      appendFileSync(logPath, d);
    });
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        appendFileSync(logPath, `\n==== ${name} pid ${child.pid ?? '?'} exited code ${code} signal ${signal} ${new Date().toISOString()}\n`);
        resolve({ code, signal });
      });
    });
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** SIGKILL, resolved once the process is gone. */
  async kill9(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM (a clean stop), then SIGKILL after `graceMs`; resolves with the exit. */
  async stop(graceMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last lines of its output, for failure messages. */
  tail(lines = 30): string {
    return `${this.name} stdout:\n${this.stdout.split('\n').slice(-lines).join('\n')}\n${this.name} stderr:\n${this.stderr.split('\n').slice(-lines).join('\n')}`;
  }
}

function cliEnv(extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: process.env.TMPDIR };
  return { ...env, ...extra };
}

function spawnCli(name: string, args: readonly string[], logPath: string, env: Readonly<Record<string, string>> = {}): ChildRun {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: repoRoot, env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  return new ChildRun(name, child, logPath);
}

/** The first JSON document a child prints on stdout (its address, token or id); fails at once if it exits first. */
export function firstJson<T>(run: ChildRun, what: string, name: string): Promise<T> {
  return waitUntil(
    what,
    () => {
      if (!run.running) throw new Error(`${name} exited ${JSON.stringify(run.exit)}\n${run.tail()}`);
      try {
        return JSON.parse(run.stdout) as T;
      } catch {
        return undefined;
      }
    },
    60_000,
    50,
  );
}

export async function waitUntil<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// The writer

/**
 * A RecordWriter over the agent's NBD export that outlives the agent: every record is
 * NbdClient.write + flush; a failed write drops the connection, and the loop reconnects
 * (as long as it takes) and writes the same record again.
 */
export class ExportWriter {
  readonly writer: RecordWriter;
  /** Writes that failed (the export went away under them). */
  failures = 0;
  /** Connections made to the export. */
  connections = 0;
  private client: NbdClient | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private paused = false;
  private lastError: unknown;

  constructor(
    private readonly socketPath: string,
    options: { seed: number; slotCount: number; offsetBytes: number },
  ) {
    this.writer = new RecordWriter((offset, block) => this.durableWrite(offset, block), options);
  }

  get acked(): AckLog {
    return this.writer.acked;
  }

  /** Starts writing records one after another until stop(). */
  start(): void {
    if (this.loop) throw new Error('the writer is already running');
    this.stopping = false;
    this.loop = (async () => {
      while (!this.stopping) {
        if (this.paused) {
          await sleep(20);
          continue;
        }
        try {
          await this.writer.writeNext();
        } catch (err) {
          this.failures++;
          this.lastError = err;
          await sleep(50);
        }
      }
    })();
  }

  /** Waits for the record being written, then stops; resolves with everything acknowledged. */
  async stop(): Promise<AckLog> {
    this.stopping = true;
    await this.loop;
    this.loop = undefined;
    await this.disconnect();
    return this.writer.acked;
  }

  /** Resolves once `count` more records are acknowledged than now. */
  async waitForRecords(count: number, timeoutMs = 60_000): Promise<void> {
    const target = this.writer.acked.records.length + count;
    await waitUntil(`${count} more acknowledged records (last write error: ${String(this.lastError)})`, () => this.writer.acked.records.length >= target, timeoutMs, 20);
  }

  async disconnect(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.close().catch(() => undefined);
  }

  /** Reads the whole disk through the export (what the disk's user sees). */
  async readAll(): Promise<Buffer> {
    const c = await this.connected();
    const parts: Buffer[] = [];
    const step = 4 * MiB;
    for (let at = 0; at < c.sizeBytes; at += step) parts.push(await c.read(at, Math.min(step, c.sizeBytes - at)));
    return Buffer.concat(parts);
  }

  /** The connection, made again as often as needed; a writer being stopped gives up instead of waiting for the export. */
  private async connected(forWrite = false): Promise<NbdClient> {
    for (;;) {
      if (this.client) return this.client;
      if (forWrite && this.stopping) throw new Error('the writer is stopping');
      try {
        this.client = await NbdClient.connect({ target: { socketPath: this.socketPath }, exportName: 'disk', timeoutMs: 15_000 });
        this.connections++;
        return this.client;
      } catch (err) {
        this.lastError = err;
        await sleep(50);
      }
    }
  }

  private async durableWrite(offset: number, block: Buffer): Promise<void> {
    const c = await this.connected(true);
    try {
      await c.write(offset, block);
      await c.flush();
    } catch (err) {
      if (this.client === c) this.client = undefined;
      await c.close().catch(() => undefined);
      throw err;
    }
  }
}

// ---------------------------------------------------------------------------
// The rig

export interface ReplicationRigOptions {
  /** Temp dir prefix (under .test-tmp). */
  readonly name: string;
  /** Seeds the records' layout (and the image's initial random bytes). */
  readonly seed: number;
  /** Size of the protected disk (a sparse file); default 128 MiB. */
  readonly imageBytes?: number;
  /** Random data written into the image before the first start (a non-empty initial replication); default 4 MiB. */
  readonly initialDataBytes?: number;
  /** Record slots (4 KiB each) the writer spreads records over; default 4096 (16 MiB). */
  readonly slotCount?: number;
  /** Where slot 0 starts; default 8 MiB (after the initial data). */
  readonly recordOffsetBytes?: number;
  /** The policy's crash-consistent frequency; default 1 s. */
  readonly crashConsistentFrequencySeconds?: number;
  /** The store URL; default an fs store in the rig's directory. */
  readonly storeUrl?: string;
  /** Extra environment of `lifeboat server` (e.g. LIFEBOAT_LOG_LEVEL). */
  readonly serverEnv?: Readonly<Record<string, string>>;
  /** Extra arguments of `lifeboat server`. */
  readonly serverArgs?: readonly string[];
  /**
   * Replicate through a standalone `lifeboat process-server run` (registered with the
   * configuration server's credential, named by the item) instead of the server's
   * built-in one; default false.
   */
  readonly standaloneProcessServer?: boolean;
}

export interface AgentRunEvents {
  /** 0 for the first start of the agent, then 1, 2, … */
  readonly run: number;
  readonly events: readonly (AgentEvent & { readonly at: string })[];
}

export interface PointCheck {
  readonly point: PointManifest;
  readonly capturedAtMs: number;
  readonly report: ImageReport;
}

/**
 * The assembled system. start() brings it up to a first recovery point; the fault
 * helpers kill and restart its processes; the check helpers read points and verify them.
 */
export class ReplicationRig {
  readonly dir: string;
  readonly image: string;
  readonly storeUrl: string;
  readonly dataDir: string;
  readonly spoolDir: string;
  readonly agentStateDir: string;
  readonly agentConfigPath: string;
  readonly socketPath: string;
  readonly logPath: string;
  readonly imageBytes: number;
  readonly writer: ExportWriter;
  server: ChildRun | undefined;
  agent: ChildRun | undefined;
  /** The standalone process server, with `standaloneProcessServer`. */
  processServer: ChildRun | undefined;
  /** Its id in the vault, with `standaloneProcessServer`. */
  processServerId = '';
  /** Its port (fixed across restarts), with `standaloneProcessServer`. */
  standalonePort = 0;
  readonly standaloneStateDir: string;
  readonly standaloneSpoolDir: string;
  /** Every agent run's events, oldest run first. */
  readonly agentRuns: ChildRun[] = [];
  apiPort = 0;
  processServerPort = 0;
  adminToken = '';
  vaultId = '';
  policyId = '';
  itemId = '';
  private repo: Repository | undefined;
  private readonly cleanupDir: () => void;

  private constructor(readonly options: ReplicationRigOptions) {
    const tmp = makeTempDir(options.name);
    this.dir = tmp.path;
    this.cleanupDir = tmp.cleanup;
    this.image = join(this.dir, 'sda.img');
    this.storeUrl = options.storeUrl ?? `file://${join(this.dir, 'store')}`;
    this.dataDir = join(this.dir, 'vault');
    this.spoolDir = join(this.dir, 'spool');
    this.agentStateDir = join(this.dir, 'agent');
    this.agentConfigPath = join(this.dir, 'agent.json');
    this.socketPath = join(this.dir, 'sda.sock');
    this.logPath = join(this.dir, 'processes.log');
    this.standaloneStateDir = join(this.dir, 'process-server');
    this.standaloneSpoolDir = join(this.dir, 'process-server-spool');
    this.imageBytes = options.imageBytes ?? 128 * MiB;
    const slotCount = options.slotCount ?? 4096;
    const offsetBytes = options.recordOffsetBytes ?? 8 * MiB;
    if (offsetBytes + slotCount * RECORD_BYTES > this.imageBytes) throw new Error('the record slots do not fit in the image');
    this.writer = new ExportWriter(this.socketPath, { seed: options.seed >>> 0, slotCount, offsetBytes });
  }

  get apiUrl(): string {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  /** The store disk of the protected disk: `<itemId>.sda`. */
  get storeDisk(): string {
    return `${this.itemId}.${DISK_NAME}`;
  }

  /**
   * Creates the image, starts the server, sets up vault, policy, configuration server,
   * machine and item through the API, starts the agent (which enrolls) and waits for
   * the item's first recovery point. The writer is not started.
   */
  static async start(options: ReplicationRigOptions): Promise<ReplicationRig> {
    const rig = new ReplicationRig(options);
    try {
      await rig.setUp();
    } catch (err) {
      await rig.close({ keepDir: true });
      throw new Error(`the replication rig did not come up (logs in ${rig.logPath}): ${String(err)}`, { cause: err });
    }
    return rig;
  }

  private async setUp(): Promise<void> {
    mkdirSync(this.agentStateDir, { recursive: true });
    writeFileSync(this.logPath, '');
    writeFileSync(this.image, '');
    const fd = openSync(this.image, 'r+');
    try {
      const initial = this.options.initialDataBytes ?? 4 * MiB;
      if (initial > 0) writeFileSync(fd, randomBytes(initial));
    } finally {
      closeSync(fd);
    }
    // Sparse: the rest of the disk is a hole.
    truncateSync(this.image, this.imageBytes);

    this.apiPort = await freePort();
    this.processServerPort = await freePort();
    await this.startServer();

    const vault = await this.api('POST', '/api/v1/vaults', { name: 'faults', location: 'local', storeUrl: this.storeUrl, storePassphrase: PASSPHRASE }, 201);
    this.vaultId = String(vault.id);
    const policy = await this.api(
      'POST',
      '/api/v1/policies',
      {
        vaultId: this.vaultId,
        name: 'fast',
        rpoThresholdSeconds: 3600,
        retentionHours: 24,
        appConsistentFrequencyMinutes: 0,
        crashConsistentFrequencySeconds: this.options.crashConsistentFrequencySeconds ?? 1,
      },
      201,
    );
    this.policyId = String(policy.id);
    const key = await this.api('POST', `/api/v1/vaults/${this.vaultId}/registration-keys`, {}, 201);
    const registered = await this.api(
      'POST',
      '/api/v1/config-servers/register',
      { registrationKey: String(key.key), name: 'cs-faults', address: '127.0.0.1', version: '0.1.0', clock: new Date().toISOString() },
      201,
      false,
    );
    const configServerId = String((registered.server as { id: string }).id);
    writeFileSync(join(this.dir, 'cs.credential'), `${String(registered.credential)}\n`, { mode: 0o600 });
    writeFileSync(join(this.dir, 'store.passphrase'), `${PASSPHRASE}\n`, { mode: 0o600 });
    if (this.options.standaloneProcessServer) {
      this.standalonePort = await freePort();
      await this.startProcessServer();
    }
    const machine = await this.api('POST', '/api/v1/machines', { configServerId, name: 'protected-1', privateIp: '127.0.0.1', os: 'debian-12', kernel: '6.1.0-18-amd64' }, 201);
    // A manual install: the "Enable protection" job waits for the agent to enroll with a token.
    const enabled = await this.api('POST', '/api/v1/replication/enable', {
        vaultId: this.vaultId,
        policyId: this.policyId,
        configServerId,
        install: 'manual',
        machines: [String(machine.id)],
        ...(this.options.standaloneProcessServer ? { processServerId: this.processServerId } : {}),
      }, 202);
    this.itemId = String((enabled.items as { id: string }[])[0]?.id);
    const token = await this.api('POST', `/api/v1/items/${this.itemId}/enrollment-token`, {}, 201);
    const tokenFile = join(this.dir, 'enrollment-token');
    writeFileSync(tokenFile, `${String(token.token)}\n`, { mode: 0o600 });
    writeFileSync(this.agentConfigPath, JSON.stringify({ disks: [{ name: DISK_NAME, tracker: { kind: 'journal', path: this.image, socketPath: this.socketPath } }] }));
    await this.startAgent(['--vault', this.apiUrl, '--item', this.itemId, '--token-file', tokenFile]);
    await this.waitForPoint({ capturedAfterMs: 0, timeoutMs: 120_000 });
  }

  // ---- processes ------------------------------------------------------------

  /** Starts `lifeboat server` on the rig's data dir and fixed ports; resolves once it answers. */
  async startServer(): Promise<void> {
    if (this.server?.running) throw new Error('the server is running');
    const args = [
      'server',
      '--data-dir',
      this.dataDir,
      '--listen',
      `127.0.0.1:${this.apiPort}`,
      '--process-server-port',
      String(this.processServerPort),
      '--spool-dir',
      this.spoolDir,
      '--json',
      ...(this.options.serverArgs ?? []),
    ];
    const run = spawnCli('server', args, this.logPath, { LIFEBOAT_LOG_LEVEL: 'info', ...this.options.serverEnv });
    this.server = run;
    const started = await firstJson<{ adminToken: string | null }>(run, 'lifeboat server to print its address', 'lifeboat server');
    if (started.adminToken) this.adminToken = started.adminToken;
  }

  /** SIGKILL to the server (vault + process server): no clean-up of any kind runs. */
  async killServer(): Promise<void> {
    await this.server?.kill9();
  }

  async restartServer(): Promise<void> {
    await this.killServer();
    await this.startServer();
  }

  /**
   * Starts the standalone `lifeboat process-server run` on its state dir, spool and fixed
   * port (with `standaloneProcessServer`); resolves once it listens (it registered).
   */
  async startProcessServer(): Promise<void> {
    if (!this.options.standaloneProcessServer) throw new Error('the rig runs the built-in process server (standaloneProcessServer: false)');
    if (this.processServer?.running) throw new Error('the process server is running');
    const args = [
      'process-server',
      'run',
      '--vault',
      this.apiUrl,
      '--credential-file',
      join(this.dir, 'cs.credential'),
      '--name',
      'ps-faults',
      '--listen',
      `127.0.0.1:${this.standalonePort}`,
      '--address',
      '127.0.0.1',
      '--state-dir',
      this.standaloneStateDir,
      '--spool-dir',
      this.standaloneSpoolDir,
      '--passphrase-file',
      join(this.dir, 'store.passphrase'),
      '--json',
    ];
    const run = spawnCli('process-server', args, this.logPath, { LIFEBOAT_LOG_LEVEL: 'info' });
    this.processServer = run;
    const started = await firstJson<{ id: string }>(run, 'lifeboat process-server run to listen', 'lifeboat process-server run');
    this.processServerId = String(started.id);
  }

  /** SIGKILL to the standalone process server. */
  async killProcessServer(): Promise<void> {
    await this.processServer?.kill9();
  }

  async restartProcessServer(): Promise<void> {
    await this.killProcessServer();
    await this.startProcessServer();
  }

  /** Starts `lifeboat agent run --json` (extra args: the enrollment flags on the first start). */
  async startAgent(extraArgs: readonly string[] = []): Promise<void> {
    if (this.agent?.running) throw new Error('the agent is running');
    const run = spawnCli(`agent#${this.agentRuns.length}`, ['agent', 'run', '--state-dir', this.agentStateDir, '--config', this.agentConfigPath, '--json', ...extraArgs], this.logPath);
    this.agent = run;
    this.agentRuns.push(run);
    // Serving: the export accepts connections (the tracker recovered first).
    await waitUntil(
      'the agent to serve its NBD export',
      async () => {
        if (!run.running) throw new Error(`lifeboat agent run exited ${JSON.stringify(run.exit)}\n${run.tail()}`);
        if (!existsSync(this.socketPath) || !run.stdout.includes('"tracker-opened"')) return undefined;
        const c = await NbdClient.connect({ target: { socketPath: this.socketPath }, exportName: 'disk', timeoutMs: 5000 });
        await c.close();
        return true;
      },
      60_000,
      50,
    );
  }

  /** SIGKILL to the agent, mid-whatever it was doing. */
  async killAgent(): Promise<void> {
    await this.agent?.kill9();
  }

  async restartAgent(): Promise<void> {
    await this.killAgent();
    await this.startAgent();
  }

  /** The JSON events of every agent run so far. */
  agentEvents(): AgentRunEvents[] {
    return this.agentRuns.map((run, i) => ({
      run: i,
      events: run.stdout
        .split('\n')
        .filter((l) => l.trim().startsWith('{'))
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as AgentEvent & { at: string }];
          } catch {
            return []; // a line cut by SIGKILL
          }
        }),
    }));
  }

  /**
   * Continuity problems: any agent run after the first whose tracker lost continuity,
   * and any full compare after the first run's first full cut. Empty when replication
   * always resumed without a full resync.
   */
  fullResyncs(): string[] {
    const problems: string[] = [];
    let sawFirstFull = false;
    for (const { run, events } of this.agentEvents()) {
      for (const e of events) {
        if (e.event === 'tracker-opened' && run > 0 && e.continuity !== 'continuous') problems.push(`agent run ${run}: tracker ${e.continuity}${e.reason ? ` (${e.reason})` : ''} at ${e.at}`);
        if (e.event === 'cut-started' && e.full) {
          if (run === 0 && !sawFirstFull) sawFirstFull = true;
          else problems.push(`agent run ${run}: full compare started at ${e.at} (cut ${e.cutId}, from sequence ${e.firstSequence})`);
        }
      }
    }
    return problems;
  }

  // ---- what the processes are doing (for kills aimed at a state) ------------

  /** The store's folder when the store is a file:// URL, else undefined. */
  get storeDir(): string | undefined {
    return this.storeUrl.startsWith('file://') ? fileURLToPath(this.storeUrl) : undefined;
  }

  /** The disk's lock is in the store: the replica processor is making a point right now (file:// stores). */
  diskLocked(): boolean {
    const dir = this.storeDir;
    return dir !== undefined && existsSync(join(dir, 'locks', this.storeDisk));
  }

  /** Segment files in the process server's spool (acknowledged to the agent, not yet uploaded and deleted). */
  spooledSegments(): string[] {
    const root = join(this.options.standaloneProcessServer ? this.standaloneSpoolDir : this.spoolDir, this.storeDisk);
    if (!existsSync(root)) return [];
    return readdirSync(root, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .flatMap((d) => readdirSync(join(root, d.name)).filter((f) => f.endsWith('.seg')).map((f) => join(root, d.name, f)));
  }

  /** The agent's state.json of the disk (generation, nextSequence, inFlight), or undefined. */
  agentDiskState(): { generation: number; nextSequence: number; inFlight: { cutId: string; firstSequence: number; lastSequence?: number } | null } | undefined {
    const path = join(this.agentStateDir, 'disks', DISK_NAME, 'state.json');
    try {
      return JSON.parse(readFileSync(path, 'utf8')) as ReturnType<ReplicationRig['agentDiskState']>;
    } catch {
      return undefined; // missing, or being replaced
    }
  }

  // ---- API --------------------------------------------------------------------

  /** A REST call with the admin token; throws unless the status is `expect`. */
  async api(method: string, path: string, body?: unknown, expect = 200, auth = true): Promise<Record<string, unknown>> {
    const res = await fetch(`${this.apiUrl}${path}`, {
      method,
      headers: { ...(auth ? { authorization: `Bearer ${this.adminToken}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (res.status !== expect) throw new Error(`${method} ${path}: ${res.status} (expected ${expect}): ${text}`);
    return text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
  }

  // ---- store and points -----------------------------------------------------

  /** The vault's store, opened with its passphrase (once; the chunk index is reloaded per read). */
  async store(): Promise<Repository> {
    this.repo ??= await Repository.open(await openStorage(this.storeUrl), PASSPHRASE);
    return this.repo;
  }

  /** The newest point of the disk, or undefined. */
  async latestPoint(): Promise<PointManifest | undefined> {
    return (await this.store()).latestPoint(this.storeDisk);
  }

  /** Waits for a point of the disk captured strictly after `capturedAfterMs` (the agent's cut clock). */
  async waitForPoint(options: { capturedAfterMs: number; timeoutMs?: number }): Promise<PointManifest> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    return waitUntil(
      `a point captured after ${new Date(options.capturedAfterMs).toISOString()}`,
      async () => {
        const p = await this.latestPoint();
        return p && capturedAtMs(p) > options.capturedAfterMs ? p : undefined;
      },
      timeoutMs,
      200,
    );
  }

  /** Restores `length` bytes from `offset` of a point (default the whole disk). */
  async readPoint(point: PointManifest, offset = 0, length = point.diskSizeBytes - offset): Promise<Buffer> {
    const repo = await this.store();
    repo.forgetChunkIndex();
    const reader = await PointReader.open(repo, point, { workers: 0 });
    try {
      reader.checkComplete();
      return await reader.read(offset, length);
    } finally {
      await reader.close();
    }
  }

  /**
   * Restores the records' region of a point and checks it against the writer: a prefix
   * of the records (crash consistent), every record acknowledged before the point's
   * capture time present. Throws with verifyImage's description otherwise.
   */
  async checkPoint(point: PointManifest, acked: AckLog = this.writer.acked): Promise<PointCheck> {
    const end = acked.layout.offsetBytes + acked.layout.slotCount * RECORD_BYTES;
    const bytes = await this.readPoint(point, 0, end);
    const at = capturedAtMs(point);
    const report = await verifyImage(bytes, acked, { upToTime: at });
    return { point, capturedAtMs: at, report };
  }

  /** checkPoint without the throw. */
  async inspectPoint(point: PointManifest, acked: AckLog = this.writer.acked): Promise<ImageReport> {
    const end = acked.layout.offsetBytes + acked.layout.slotCount * RECORD_BYTES;
    return inspectImage(await this.readPoint(point, 0, end), acked, { upToTime: capturedAtMs(point) });
  }

  /** verifyStore over a freshly opened store (`full` reads and authenticates every chunk). */
  async verifyStore(full = true): Promise<VerifyReport> {
    const repo = await Repository.open(await openStorage(this.storeUrl), PASSPHRASE);
    return verifyStore(repo, { full });
  }

  /** The store passphrase the vault was created with (for `lifeboat store verify` and the like). */
  get storePassphrase(): string {
    return PASSPHRASE;
  }

  /**
   * Stops everything (SIGTERM, then SIGKILL), and removes the rig's directory unless
   * `keepDir` (keep it when a test failed: processes.log has every process's output).
   */
  async close(options: { keepDir?: boolean } = {}): Promise<void> {
    await this.writer.stop().catch(() => undefined);
    await this.agent?.stop(10_000);
    await this.processServer?.stop(10_000);
    await this.server?.stop(10_000);
    if (!options.keepDir) this.cleanupDir();
  }
}

/** A point's capture time in ms (its createdAt for points without one). */
export function capturedAtMs(point: PointManifest): number {
  return Date.parse(point.capturedAt ?? point.createdAt);
}
