/**
 * Continuous-replication benchmark (`npm run -s bench -- --replication`,
 * docs/benchmarks.md, "Continuous replication"): replication lag while fio writes
 * to a protected disk, and the agent's and the process server's CPU and memory.
 *
 * Each rate runs on a fresh set of three processes besides fio:
 * - this one: the vault on a worker thread (startVaultServer, SQLite, a fs store
 *   under .bench/, policy crash-consistent every 1 s, its replica processor on its
 *   default 1 s pass), and on the main thread the marker writer and the /proc sampler;
 * - the process server, a child process (`--serve-process-server`) that asks this
 *   process over IPC to authorize agents (the vault's own `authorize`) and uploads
 *   into the vault's store;
 * - the real agent, `node bin/lifeboat.js agent run --json` (the built CLI), enrolled
 *   with a one-time token, with the journal tracker over a 2 GiB sparse image and its
 *   NBD export on a Unix socket.
 *
 * fio (Debian's) writes random 4–64 KiB blocks through that export at each rate. The
 * last MARKER_REGION_BYTES of the disk are kept from fio; there, several times a
 * second, this process writes a 4 KiB marker and flushes it (NbdClient). A marker
 * whose flush returned at t1 is in the first cut captured at or after t1: it is
 * durable at the process server when the agent reports that cut committed (every
 * segment acknowledged: spooled and fsynced), and in a recovery point when the
 * replica processor has made a point captured at or after t1. Both lags run from
 * the moment the marker's write was issued.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, workerData, type MessagePort } from 'node:worker_threads';
import { LifeboatError } from '../src/core/errors.js';
import { pointCapturedAt } from '../src/format/manifest.js';
import { NbdClient } from '../src/nbd/client.js';
import type { AgentGrant, ProcessServerBackend } from '../src/process-server/backend.js';
import { startProcessServer, type ProcessServerStats } from '../src/process-server/server.js';
import { FsStorage } from '../src/storage/fs/fs-storage.js';
import { Repository } from '../src/store/repository.js';
import { createVaultLogger } from '../src/vault/logging/logger.js';
import { startVaultServer } from '../src/vault/server.js';
import { requireTool } from '../test/helpers/env.js';
import { startFio, type FioResult } from '../test/helpers/fio.js';
import { BENCH_DIR, ROOT } from './paths.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const MB = 1e6;
/** The tail of the disk fio never touches: the markers live there. */
const MARKER_REGION_BYTES = 64 * MiB;
const MARKER_BYTES = 4096;
const STORE_PASSPHRASE = 'bench-replication-Passphrase-1';
/** After fio stops, how long the last markers may take to reach a point; later markers are counted as missing. */
const DRAIN_TIMEOUT_MS = 60_000;
/** Before the first rate: the initial (full) cut of the sparse image and its point. */
const INITIAL_TIMEOUT_MS = 300_000;
const SAMPLE_MS = 250;

/** The issue's goal: p99 write → durable at the process server at 20 MB/s. */
export const LAG_GOAL_S = 5;
export const LAG_GOAL_RATE_MBPS = 20;

export interface ReplicationOptions {
  /** fio rates, MB/s (10^6 bytes). */
  readonly ratesMBps: readonly number[];
  /** fio run time per rate. */
  readonly durationS: number;
  readonly diskBytes: number;
  /** Pause between two markers (each is written and flushed, then the next waits this long). */
  readonly markerIntervalMs: number;
  /** fio iodepth (the nbd engine is asynchronous). */
  readonly ioDepth: number;
}

export const REPLICATION_DEFAULTS: ReplicationOptions = Object.freeze({
  ratesMBps: Object.freeze([5, 20, 50]),
  durationS: 60,
  diskBytes: 2 * GiB,
  markerIntervalMs: 200,
  ioDepth: 4,
});

export interface Lag {
  /** Markers that got there before the drain timeout. */
  readonly n: number;
  readonly p50S: number;
  readonly p99S: number;
  readonly maxS: number;
  /**
   * Markers that did not get there are counted at the time the bench gave up (a lower
   * bound); a percentile that falls on one of them is only a lower bound, marked here.
   */
  readonly p50AtLeast: boolean;
  readonly p99AtLeast: boolean;
  readonly maxAtLeast: boolean;
}

export interface ProcFigures {
  /** user + system over the fio window, as a percentage of one core. */
  readonly cpuPercent: number;
  readonly cpuSeconds: number;
  /** Highest VmRSS sampled during the window (every 250 ms). */
  readonly peakRssMiB: number;
  /** VmHWM at the end of the window: the process's peak since it started. */
  readonly hwmMiB: number;
}

export interface RateResult {
  readonly askedMBps: number;
  readonly fio: { readonly bytes: number; readonly MBps: number; readonly runtimeS: number; readonly writes: number; readonly p99WriteLatencyMs: number };
  /** fio's bandwidth reached 95 % of the asked rate. */
  readonly keptRate: boolean;
  readonly markers: number;
  readonly durable: Lag;
  readonly point: Lag;
  /** Markers whose cut was not acknowledged before the drain timeout. */
  readonly durableMissing: number;
  /** Markers that reached no point before the drain timeout. */
  readonly markersMissing: number;
  /** Data bytes of the cuts the agent committed from the start of fio to the end of the drain. */
  readonly shippedBytes: number;
  readonly cuts: number;
  /** Bytes the process server received (frames) in the same time. */
  readonly psBytesIn: number;
  readonly points: number;
  /** Mean and longest processor pass that made a point, seconds. */
  readonly passMeanS: number;
  readonly passMaxS: number;
  readonly agent: ProcFigures;
  readonly processServer: ProcFigures;
  /** This process: the vault (API, replica processor) plus the bench's marker writer and sampler. */
  readonly vault: { readonly cpuPercent: number };
  readonly loadAvg1: number;
}

export interface ReplicationReport {
  readonly commandLine: string;
  readonly startedAt: string;
  readonly machine: string;
  readonly loadAtStart: number;
  readonly loadAtEnd: number;
  readonly options: ReplicationOptions;
  readonly fioCommand: string;
  readonly initial: { readonly cutSeconds: number; readonly pointSeconds: number; readonly bytes: number };
  readonly rates: readonly RateResult[];
}

// ---------------------------------------------------------------------------------
// The process-server child.

interface ServeConfig {
  readonly storeUrl: string;
  readonly spoolDir: string;
  readonly tls: { readonly certPem: string; readonly keyPem: string; readonly caPem: string };
}

type ToChild = { type: 'authorized'; id: number; grant?: AgentGrant; error?: { code: string; message: string } } | { type: 'stats'; id: number } | { type: 'stop' };
type FromChild = { type: 'ready'; port: number } | { type: 'authorize'; id: number; machineId: string; certificateSerial: string } | { type: 'stats'; id: number; stats: ProcessServerStats };

async function serveProcessServer(configPath: string): Promise<void> {
  const config = JSON.parse(await readFile(configPath, 'utf8')) as ServeConfig;
  const send = (m: FromChild): void => void process.send?.(m);
  const waiting = new Map<number, (m: Extract<ToChild, { type: 'authorized' }>) => void>();
  let nextId = 1;
  let repo: Promise<Repository> | undefined;
  const backend: ProcessServerBackend = {
    // The vault (the parent) decides, with the same authorize the built-in process server calls.
    authorize: ({ machineId, certificateSerial }) =>
      new Promise<AgentGrant>((resolve, reject) => {
        const id = nextId++;
        waiting.set(id, (m) => (m.grant ? resolve(m.grant) : reject(new LifeboatError('AGENT_UNAUTHORIZED', m.error?.message ?? 'refused'))));
        send({ type: 'authorize', id, machineId, certificateSerial });
      }),
    repository: async () => (repo ??= FsStorage.open(config.storeUrl).then((s) => Repository.open(s, STORE_PASSPHRASE))),
  };
  const server = await startProcessServer({
    host: '127.0.0.1',
    port: 0,
    tls: config.tls,
    spoolDir: config.spoolDir,
    spoolLimitBytes: 8 * GiB,
    backend,
  });
  process.on('message', (m: ToChild) => {
    if (m.type === 'authorized') {
      waiting.get(m.id)?.(m);
      waiting.delete(m.id);
    } else if (m.type === 'stats') {
      send({ type: 'stats', id: m.id, stats: server.stats() });
    } else if (m.type === 'stop') {
      void server.close().finally(() => process.exit(0));
    }
  });
  process.on('disconnect', () => void server.close().finally(() => process.exit(0)));
  send({ type: 'ready', port: server.port });
}

class ProcessServerChild {
  private readonly statsWaiters = new Map<number, (s: ProcessServerStats) => void>();
  private nextId = 1;
  readonly ready: Promise<number>;
  private constructor(readonly child: ChildProcess, authorize: (input: { machineId: string; certificateSerial: string }) => Promise<AgentGrant>) {
    this.ready = new Promise((resolve, reject) => {
      child.once('exit', (code, signal) => reject(new Error(`the process server exited (${code ?? signal})`)));
      child.on('message', (m: FromChild) => {
        if (m.type === 'ready') resolve(m.port);
        else if (m.type === 'stats') {
          this.statsWaiters.get(m.id)?.(m.stats);
          this.statsWaiters.delete(m.id);
        } else if (m.type === 'authorize') {
          authorize({ machineId: m.machineId, certificateSerial: m.certificateSerial }).then(
            (grant) => child.send({ type: 'authorized', id: m.id, grant } satisfies ToChild),
            (e: unknown) => child.send({ type: 'authorized', id: m.id, error: { code: (e as LifeboatError).code ?? 'INTERNAL', message: (e as Error).message } } satisfies ToChild),
          );
        }
      });
    });
    this.ready.catch(() => undefined);
  }

  static start(configPath: string, authorize: (input: { machineId: string; certificateSerial: string }) => Promise<AgentGrant>): ProcessServerChild {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve-process-server', configPath], {
      cwd: ROOT,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    return new ProcessServerChild(child, authorize);
  }

  stats(): Promise<ProcessServerStats> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.statsWaiters.set(id, resolve);
      this.child.send({ type: 'stats', id } satisfies ToChild);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.send({ type: 'stop' } satisfies ToChild);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------
// /proc readings.

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process (all its threads), seconds. */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces: the fields after it start past the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** CPU and RSS of one process over a window. */
class ProcWatch {
  private readonly cpu0: number;
  private readonly t0 = performance.now();
  private peakKiB = 0;
  constructor(private readonly pid: number) {
    this.cpu0 = cpuSecondsOf(pid);
    this.sample();
  }
  sample(): void {
    this.peakKiB = Math.max(this.peakKiB, statusKiB(this.pid, 'VmRSS'));
  }
  finish(): ProcFigures {
    this.sample();
    const cpuSeconds = cpuSecondsOf(this.pid) - this.cpu0;
    const wallS = (performance.now() - this.t0) / 1000;
    return { cpuSeconds, cpuPercent: (100 * cpuSeconds) / wallS, peakRssMiB: this.peakKiB / 1024, hwmMiB: statusKiB(this.pid, 'VmHWM') / 1024 };
  }
}

// ---------------------------------------------------------------------------------
// The agent child.

interface CutCommitted {
  readonly capturedAtMs: number;
  /** When the agent emitted the event: its last segment was acknowledged. */
  readonly ackedAtMs: number;
  readonly bytes: number;
  readonly full: boolean;
}

class AgentChild {
  readonly cuts: CutCommitted[] = [];
  private stderrTail = '';
  readonly exited: Promise<string>;
  private constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let e: { event?: string; at?: string; capturedAtMs?: number; bytes?: number; full?: boolean; code?: string; message?: string };
      try {
        e = JSON.parse(line) as typeof e;
      } catch {
        return;
      }
      if (e.event === 'cut-committed') {
        this.cuts.push({ capturedAtMs: Number(e.capturedAtMs), ackedAtMs: Date.parse(String(e.at)), bytes: Number(e.bytes), full: Boolean(e.full) });
      } else if (e.event === 'disk-error' || e.event === 'disconnected' || e.event === 'cut-aborted') {
        process.stderr.write(`[bench] agent: ${line}\n`);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderrTail = (this.stderrTail + s).slice(-4000)));
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(`agent exited (${code ?? signal}): ${this.stderrTail.trim()}`)));
  }

  static start(args: readonly string[]): AgentChild {
    return new AgentChild(spawn(process.execPath, [join(ROOT, 'bin', 'lifeboat.js'), 'agent', 'run', ...args, '--json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  get pid(): number {
    return this.child.pid as number;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
    await this.exited;
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------
// The vault, on a worker thread of this process: a replica-processor pass holds its
// event loop for seconds, and the marker writer and the sampler must not wait for it.

interface VaultReady {
  readonly type: 'ready';
  readonly url: string;
  readonly itemId: string;
  readonly token: string;
  readonly storeUrl: string;
  readonly tls: ServeConfig['tls'];
}
type FromVault =
  | VaultReady
  | { type: 'point'; capturedAtMs: number; atMs: number; passMs: number }
  | { type: 'authorized'; id: number; grant?: AgentGrant; error?: { code: string; message: string } }
  | { type: 'endpoint-set' }
  | { type: 'failed'; message: string };
type ToVault = { type: 'authorize'; id: number; machineId: string; certificateSerial: string } | { type: 'endpoint'; port: number } | { type: 'close' };

async function vaultWorker(dir: string): Promise<void> {
  const port = parentPort as MessagePort;
  const post = (m: FromVault): void => port.postMessage(m);
  const vault = await startVaultServer({
    dataDir: join(dir, 'vault'),
    host: '127.0.0.1',
    port: 0,
    logger: createVaultLogger({ level: 'warn' }),
    storeScrypt: { N: 2 ** 14, r: 8, p: 1 },
  });
  port.on('message', (m: ToVault) => {
    if (m.type === 'authorize') {
      vault.processServerBackend.authorize({ machineId: m.machineId, certificateSerial: m.certificateSerial }).then(
        (grant) => post({ type: 'authorized', id: m.id, grant: { ...grant, disks: [...grant.disks] } }),
        (e: unknown) => post({ type: 'authorized', id: m.id, error: { code: (e as LifeboatError).code ?? 'INTERNAL', message: (e as Error).message } }),
      );
    } else if (m.type === 'endpoint') {
      vault.setProcessServerEndpoint({ host: '127.0.0.1', port: m.port, serverName: 'localhost' });
      post({ type: 'endpoint-set' });
    } else if (m.type === 'close') {
      void vault.close().finally(() => process.exit(0));
    }
  });
  const owner = vault.initialAdminToken as string;
  const api = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(vault.url + path, {
      method,
      headers: { authorization: `Bearer ${owner}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as Record<string, unknown>;
  };
  const storeUrl = pathToFileURL(join(dir, 'store')).href;
  const vaultId = String((await api('POST', '/api/v1/vaults', { name: 'bench', location: 'local', storeUrl, storePassphrase: STORE_PASSPHRASE })).id);
  // The machine and item as the enable-protection job would leave them (as in test/vault/replica/agent-e2e.test.ts).
  const repos = vault.repos;
  const cs = await repos.configServers.create({ vaultId, name: 'bench-cs', address: '127.0.0.1', version: '0.1.0' });
  const machine = await repos.machines.create({ configServerId: cs.id, name: 'bench-machine', privateIp: '127.0.0.1', os: 'debian-12', supported: true });
  const policy = await repos.policies.create({ vaultId, name: 'bench-1s', rpoThresholdSeconds: 60, retentionHours: 24, appConsistentFrequencyMinutes: 0, crashConsistentFrequencySeconds: 1 });
  const item = await repos.items.create({
    vaultId,
    machineId: machine.id,
    policyId: policy.id,
    state: 'initial-replication',
    compute: { targetName: 'bench', size: 'small', network: null, subnet: null, ip: null },
    disks: [],
  });
  await repos.items.update(item.id, { generation: 1 });
  // Every point the replica processor makes: its capture time, when the pass returned, how long the pass took.
  const replica = vault.replica;
  const processNow = replica.processNow.bind(replica);
  replica.processNow = async (itemId: string) => {
    const started = performance.now();
    const out = await processNow(itemId);
    const d = out.disks[0];
    if (d?.newest && d.pointsMade > 0) post({ type: 'point', capturedAtMs: Date.parse(pointCapturedAt(d.newest)), atMs: Date.now(), passMs: performance.now() - started });
    return out;
  };
  const token = String((await api('POST', `/api/v1/items/${item.id}/enrollment-token`, {})).token);
  post({ type: 'ready', url: vault.url, itemId: item.id, token, storeUrl, tls: await vault.processServerTls(['127.0.0.1', 'localhost']) });
}

class VaultThread {
  readonly points: PointSeen[] = [];
  readonly ready: Promise<VaultReady>;
  private readonly worker: Worker;
  private readonly authorizing = new Map<number, (m: Extract<FromVault, { type: 'authorized' }>) => void>();
  private endpointSet: (() => void) | undefined;
  private nextId = 1;
  constructor(dir: string) {
    // A worker does not inherit `--import tsx`: it registers the TypeScript loader itself, then loads this file.
    const bootstrap = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); })`;
    this.worker = new Worker(bootstrap, { eval: true, workerData: { role: 'vault', dir } });
    this.ready = new Promise((resolve, reject) => {
      this.worker.once('error', reject);
      this.worker.once('exit', (code) => reject(new Error(`the vault thread exited (${code})`)));
      this.worker.on('message', (m: FromVault) => {
        if (m.type === 'ready') resolve(m);
        else if (m.type === 'point') this.points.push({ capturedAtMs: m.capturedAtMs, atMs: m.atMs, passMs: m.passMs });
        else if (m.type === 'authorized') {
          this.authorizing.get(m.id)?.(m);
          this.authorizing.delete(m.id);
        } else if (m.type === 'endpoint-set') this.endpointSet?.();
      });
    });
    this.ready.catch(() => undefined);
  }

  authorize(input: { machineId: string; certificateSerial: string }): Promise<AgentGrant> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.authorizing.set(id, (m) => (m.grant ? resolve(m.grant) : reject(new LifeboatError('AGENT_UNAUTHORIZED', m.error?.message ?? 'refused'))));
      this.worker.postMessage({ type: 'authorize', id, ...input } satisfies ToVault);
    });
  }

  setEndpoint(port: number): Promise<void> {
    return new Promise((resolve) => {
      this.endpointSet = resolve;
      this.worker.postMessage({ type: 'endpoint', port } satisfies ToVault);
    });
  }

  /** A pass may hold the thread for a long time: after a short grace the thread is terminated (its data directory is deleted anyway). */
  async stop(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage({ type: 'close' } satisfies ToVault);
    const timer = setTimeout(() => void this.worker.terminate(), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------
// The run.

interface Marker {
  /** Write issued. */
  readonly t0: number;
  /** Flush returned: every cut captured from now on holds the marker. */
  readonly t1: number;
}

interface PointSeen {
  readonly capturedAtMs: number;
  /** The processor's pass that made it returned. */
  readonly atMs: number;
  /** How long that pass took (processJournal over every cut pending, retention, RPO). */
  readonly passMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined, fail?: Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let failure: string | undefined;
  void fail?.then((m) => (failure = m));
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (failure !== undefined) throw new Error(`${what}: ${failure}`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(50);
  }
}

function lagOf(samples: readonly { ms: number; atLeast: boolean }[]): Lag {
  const s = [...samples].sort((a, b) => a.ms - b.ms);
  const at = (p: number): { ms: number; atLeast: boolean } => {
    if (s.length === 0) return { ms: Number.NaN, atLeast: false };
    return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as { ms: number; atLeast: boolean };
  };
  const [p50, p99, max] = [at(50), at(99), at(100)];
  return { n: s.filter((x) => !x.atLeast).length, p50S: p50.ms / 1000, p99S: p99.ms / 1000, maxS: max.ms / 1000, p50AtLeast: p50.atLeast, p99AtLeast: p99.atLeast, maxAtLeast: max.atLeast };
}

/** The first entry (in time order) captured at or after t. */
function firstCapturedAfter<T extends { capturedAtMs: number }>(list: readonly T[], t: number): T | undefined {
  return list.find((x) => x.capturedAtMs >= t);
}

/** One rate on a fresh vault, process server, agent and image: no backlog carries over from the rate before. */
async function runRate(options: ReplicationOptions, rate: number, log: (msg: string) => void): Promise<{ result: RateResult; initial: ReplicationReport['initial'] }> {
  const dir = join(BENCH_DIR, 'replication');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // A Unix socket path is limited to 107 bytes: keep it short, outside the repository.
  const sockDir = mkdtempSync(join(tmpdir(), 'lb-repl-'));
  const socketPath = join(sockDir, 'nbd.sock');
  const vault = new VaultThread(dir);
  let ps: ProcessServerChild | undefined;
  let agent: AgentChild | undefined;
  let nbd: NbdClient | undefined;
  try {
    const v = await vault.ready;
    const psConfig: ServeConfig = { storeUrl: v.storeUrl, spoolDir: join(dir, 'spool'), tls: v.tls };
    writeFileSync(join(dir, 'process-server.json'), JSON.stringify(psConfig), { mode: 0o600 });
    ps = ProcessServerChild.start(join(dir, 'process-server.json'), (input) => vault.authorize(input));
    await vault.setEndpoint(await ps.ready);

    const image = join(dir, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, options.diskBytes);
    writeFileSync(join(dir, 'token'), `${v.token}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'agent.json'), JSON.stringify({ disks: [{ name: 'sda', tracker: { kind: 'journal', path: image, socketPath } }] }));
    const t0 = Date.now();
    const a = (agent = AgentChild.start([
      '--config', join(dir, 'agent.json'),
      '--state-dir', join(dir, 'agent'),
      '--vault', v.url,
      '--item', v.itemId,
      '--token-file', join(dir, 'token'),
    ]));
    const points = vault.points;
    const initialCut = await until('the initial cut', INITIAL_TIMEOUT_MS, () => a.cuts[0], a.exited);
    const initialPoint = await until('the initial point', INITIAL_TIMEOUT_MS, () => points[0], a.exited);
    await until('the NBD socket', 30_000, () => (existsSync(socketPath) ? true : undefined), a.exited);
    const client = (nbd = await NbdClient.connect({ target: { socketPath }, exportName: 'disk' }));
    const markerBase = options.diskBytes - MARKER_REGION_BYTES;
    const nbdUri = `nbd+unix:///disk?socket=${socketPath}`;
    const psPid = ps.child.pid as number;

    log(`replication: fio at ${rate} MB/s for ${options.durationS} s (initial cut after ${((initialCut.ackedAtMs - t0) / 1000).toFixed(1)} s)`);
    const cutsBefore = a.cuts.length;
    const pointsBefore = points.length;
    const psBefore = await ps.stats();
    const agentWatch = new ProcWatch(a.pid);
    const psWatch = new ProcWatch(psPid);
    const self0 = process.cpuUsage();
    const wall0 = performance.now();
    const sampler = setInterval(() => {
      try {
        agentWatch.sample();
        psWatch.sample();
      } catch {
        // A process gone between two samples is reported by its exit, not here.
      }
    }, SAMPLE_MS);
    const fio = startFio({ target: { nbdUri, sizeBytes: markerBase }, rateMBPerSec: rate, durationMs: options.durationS * 1000, ioDepth: options.ioDepth, seed: 1 });
    const markers: Marker[] = [];
    let writing = true;
    const markerLoop = (async () => {
      const block = Buffer.alloc(MARKER_BYTES);
      for (let slot = 0; writing; slot++) {
        block.writeBigUInt64LE(BigInt(slot), 0);
        block.writeDoubleLE(Date.now(), 8);
        const offset = markerBase + (slot % (MARKER_REGION_BYTES / MARKER_BYTES)) * MARKER_BYTES;
        const m0 = Date.now();
        await client.write(offset, block);
        await client.flush();
        markers.push({ t0: m0, t1: Date.now() });
        await sleep(options.markerIntervalMs);
      }
    })();
    let fioResult: FioResult;
    try {
      fioResult = await fio.done;
    } finally {
      writing = false;
      await markerLoop;
    }
    const wallS = (performance.now() - wall0) / 1000;
    clearInterval(sampler);
    const agentFig = agentWatch.finish();
    const psFig = psWatch.finish();
    const self = process.cpuUsage(self0);
    const loadAvg1 = loadavg()[0] ?? 0;
    log(`replication: fio wrote ${(fioResult.bytesWritten / MB).toFixed(0)} MB at ${(fioResult.bandwidthBytesPerSec / MB).toFixed(1)} MB/s; waiting up to ${DRAIN_TIMEOUT_MS / 1000} s for the last markers`);

    const last = markers[markers.length - 1] as Marker;
    await until(`${rate} MB/s: the last marker acknowledged`, DRAIN_TIMEOUT_MS, () => firstCapturedAfter(a.cuts, last.t1), a.exited).catch((e: unknown) => log(`replication: ${(e as Error).message}`));
    const drainDeadline = Date.now() + DRAIN_TIMEOUT_MS;
    await until(`${rate} MB/s: the last marker in a point`, Math.max(0, drainDeadline - Date.now()), () => firstCapturedAfter(points, last.t1), a.exited).catch((e: unknown) => log(`replication: ${(e as Error).message}`));
    const psAfter = await ps.stats();
    const gaveUpAt = Date.now();
    const durable: { ms: number; atLeast: boolean }[] = [];
    const inPoint: { ms: number; atLeast: boolean }[] = [];
    let durableMissing = 0;
    let pointMissing = 0;
    for (const m of markers) {
      const cut = firstCapturedAfter(a.cuts, m.t1);
      durable.push(cut ? { ms: cut.ackedAtMs - m.t0, atLeast: false } : { ms: gaveUpAt - m.t0, atLeast: true });
      if (!cut) durableMissing++;
      const point = firstCapturedAfter(points, m.t1);
      inPoint.push(point ? { ms: point.atMs - m.t0, atLeast: false } : { ms: gaveUpAt - m.t0, atLeast: true });
      if (!point) pointMissing++;
    }
    const cuts = a.cuts.slice(cutsBefore);
    const passes = points.slice(pointsBefore).map((p) => p.passMs / 1000);
    const result: RateResult = {
      askedMBps: rate,
      fio: {
        bytes: fioResult.bytesWritten,
        MBps: fioResult.bandwidthBytesPerSec / MB,
        runtimeS: fioResult.runtimeMs / 1000,
        writes: fioResult.writes,
        p99WriteLatencyMs: fioResult.writeLatencyUs.p99 / 1000,
      },
      keptRate: fioResult.bandwidthBytesPerSec >= 0.95 * rate * MB,
      markers: markers.length,
      durable: lagOf(durable),
      point: lagOf(inPoint),
      durableMissing,
      markersMissing: pointMissing,
      shippedBytes: cuts.reduce((sum, c) => sum + c.bytes, 0),
      cuts: cuts.length,
      psBytesIn: psAfter.bytesIn - psBefore.bytesIn,
      points: passes.length,
      passMeanS: passes.reduce((x, y) => x + y, 0) / passes.length,
      passMaxS: Math.max(...passes),
      agent: agentFig,
      processServer: psFig,
      vault: { cpuPercent: (100 * (self.user + self.system)) / 1e6 / wallS },
      loadAvg1,
    };
    log(
      `replication: ${rate} MB/s: durable p50 ${result.durable.p50S.toFixed(2)} s p99 ${result.durable.p99S.toFixed(2)} s; ` +
        `point p50 ${result.point.p50S.toFixed(2)} s p99 ${result.point.p99S.toFixed(2)} s (${pointMissing} of ${markers.length} in no point); agent ${agentFig.cpuPercent.toFixed(0)} % CPU, ${agentFig.peakRssMiB.toFixed(0)} MiB`,
    );
    return { result, initial: { cutSeconds: (initialCut.ackedAtMs - t0) / 1000, pointSeconds: (initialPoint.atMs - t0) / 1000, bytes: initialCut.bytes } };
  } finally {
    await nbd?.close().catch(() => undefined);
    await agent?.stop();
    await ps?.stop();
    await vault.stop();
    rmSync(sockDir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runReplication(options: ReplicationOptions, commandLine: string, log: (msg: string) => void): Promise<ReplicationReport> {
  requireTool('fio', 'fio');
  if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('the agent runs the built CLI: npm run build first');
  if (options.diskBytes <= MARKER_REGION_BYTES * 2) throw new Error('the disk is too small for the marker region');
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg()[0] ?? 0;
  const rates: RateResult[] = [];
  let initial: ReplicationReport['initial'] | undefined;
  for (const rate of options.ratesMBps) {
    const r = await runRate(options, rate, log);
    rates.push(r.result);
    initial ??= r.initial;
  }
  return {
    commandLine,
    startedAt,
    machine: `${cpus()[0]?.model ?? 'unknown CPU'}, nproc ${availableParallelism()}, node ${process.version}, ${execFileSync('fio', ['--version'], { encoding: 'utf8' }).trim()}`,
    loadAtStart,
    loadAtEnd: loadavg()[0] ?? 0,
    options,
    fioCommand: `fio --ioengine=nbd --uri=nbd+unix:///disk?socket=… --rw=randwrite --bssplit=4k/40:8k/20:16k/20:32k/10:64k/10 --blockalign=4k --norandommap --rate=<rate> --time_based --runtime=${options.durationS}s --size=${options.diskBytes - MARKER_REGION_BYTES} --iodepth=${options.ioDepth} --randseed=1`,
    initial: initial as ReplicationReport['initial'],
    rates,
  };
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '–');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '–');
const lagText = (l: Lag): string => `${l.p50AtLeast ? '> ' : ''}${f2(l.p50S)} / ${l.p99AtLeast ? '> ' : ''}${f2(l.p99S)} / ${l.maxAtLeast ? '> ' : ''}${f2(l.maxS)}`;

/** The report as markdown (docs/benchmarks.md, "Continuous replication"). */
export function renderReplication(r: ReplicationReport): string {
  const out: string[] = [];
  out.push('## Continuous replication', '');
  out.push(`- Command: \`${r.commandLine}\``);
  out.push(`- Started: ${r.startedAt}; machine: ${r.machine}; load average ${r.loadAtStart.toFixed(2)} at start, ${r.loadAtEnd.toFixed(2)} at end`);
  out.push(`- Disk: ${r.options.diskBytes / GiB} GiB sparse image, journal tracker, NBD on a Unix socket; fio ${r.options.durationS} s per rate, iodepth ${r.options.ioDepth}; a 4 KiB marker written and flushed every ${r.options.markerIntervalMs} ms`);
  out.push(`- fio: \`${r.fioCommand}\``);
  out.push(`- Initial replication of the sparse image: first cut acknowledged after ${f1(r.initial.cutSeconds)} s (${(r.initial.bytes / MiB).toFixed(1)} MiB), first point after ${f1(r.initial.pointSeconds)} s`);
  out.push('');
  out.push('| fio asked MB/s | fio got MB/s | kept rate | fio MB written | shipped MB (cuts) | PS received MB | cuts | points (pass mean / max s) | markers | durable p50 / p99 / max s | point p50 / p99 / max s | load 1 min |');
  out.push('| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const x of r.rates) {
    out.push(
      `| ${x.askedMBps} | ${f1(x.fio.MBps)} | ${x.keptRate ? 'yes' : 'no'} | ${(x.fio.bytes / MB).toFixed(0)} | ${(x.shippedBytes / MB).toFixed(0)} | ${(x.psBytesIn / MB).toFixed(0)} | ${x.cuts} | ${x.points} (${f1(x.passMeanS)} / ${f1(x.passMaxS)}) | ${x.markers}${x.durableMissing > 0 ? ` (${x.durableMissing} not acknowledged)` : ''}${x.markersMissing > 0 ? ` (${x.markersMissing} in no point by the end)` : ''} | ${lagText(x.durable)} | ${lagText(x.point)} | ${x.loadAvg1.toFixed(2)} |`,
    );
  }
  out.push('');
  out.push('| fio asked MB/s | agent CPU % of one core | agent peak RSS MiB (VmHWM) | process server CPU % | process server peak RSS MiB (VmHWM) | vault + bench CPU % | fio write p99 ms |');
  out.push('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const x of r.rates) {
    out.push(
      `| ${x.askedMBps} | ${x.agent.cpuPercent.toFixed(0)} | ${x.agent.peakRssMiB.toFixed(0)} (${x.agent.hwmMiB.toFixed(0)}) | ${x.processServer.cpuPercent.toFixed(0)} | ${x.processServer.peakRssMiB.toFixed(0)} (${x.processServer.hwmMiB.toFixed(0)}) | ${x.vault.cpuPercent.toFixed(0)} | ${f2(x.fio.p99WriteLatencyMs)} |`,
    );
  }
  const goal = r.rates.find((x) => x.askedMBps === LAG_GOAL_RATE_MBPS);
  out.push('');
  out.push('| goal | measured | ratio to goal | result |');
  out.push('| --- | ---: | ---: | --- |');
  if (goal) {
    const p99 = goal.durable.p99S;
    const met = p99 <= LAG_GOAL_S && !goal.durable.p99AtLeast && goal.keptRate;
    out.push(`| p99 write → durable at the process server ≤ ${LAG_GOAL_S} s at ${LAG_GOAL_RATE_MBPS} MB/s (fio keeping the rate) | ${goal.durable.p99AtLeast ? '> ' : ''}${f2(p99)} s | ${f2(p99 / LAG_GOAL_S)}× | ${met ? '**met**' : '**missed**'} |`);
    out.push(`| (same, to a recovery point) | ${goal.point.p99AtLeast ? '> ' : ''}${f2(goal.point.p99S)} s | ${goal.point.p99AtLeast ? '> ' : ''}${f2(goal.point.p99S / LAG_GOAL_S)}× | ${goal.point.p99S <= LAG_GOAL_S && !goal.point.p99AtLeast ? 'within' : 'beyond'} |`);
  } else {
    out.push(`| p99 write → durable ≤ ${LAG_GOAL_S} s at ${LAG_GOAL_RATE_MBPS} MB/s | not run | – | pending |`);
  }
  out.push('');
  return out.join('\n');
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'vault') {
  await vaultWorker((workerData as { dir: string }).dir);
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--serve-process-server');
  if (i < 0 || !process.argv[i + 1]) {
    console.error('bench/replication.ts runs from `npm run -s bench -- --replication`');
    process.exit(2);
  }
  await serveProcessServer(process.argv[i + 1] as string);
}
