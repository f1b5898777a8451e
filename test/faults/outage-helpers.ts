/**
 * Pieces the storage-outage and network-cut tests share, beyond replication-harness.ts:
 *
 * - NetnsRig: the replication path split over two network namespaces joined by a cable
 *   the test can pull (test/helpers/netns.ts). `lifeboat server` (vault API and built-in
 *   process server) listens on namespace b's address; `lifeboat agent run` runs in
 *   namespace a and reaches both across the link. The test process stays in the host
 *   namespace: it writes through the agent's NBD export (a Unix socket is a file path,
 *   reachable from any network namespace) and calls the REST API through a small
 *   forwarder started in namespace b on a Unix socket, so the API stays reachable while
 *   the cable is out. The store is an fs store, read directly by the test.
 * - Process-server figures from GET /metrics, open alerts, the item's RPO.
 * - A sampler that records figures over time and keeps the peaks for the report.
 */
import { existsSync, mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { AgentEvent } from '../../src/agent/agent.js';
import type { PointManifest } from '../../src/format/manifest.js';
import { NbdClient } from '../../src/nbd/client.js';
import { openStorage } from '../../src/storage/registry.js';
import { PointReader } from '../../src/store/point-reader.js';
import { Repository } from '../../src/store/repository.js';
import { verifyStore, type VerifyReport } from '../../src/store/verify.js';
import { makeTempDir, repoRoot, requireTool } from '../helpers/env.js';
import { createLink, type NetnsLink } from '../helpers/netns.js';
import { RECORD_BYTES, verifyImage, type AckLog, type ImageReport } from '../helpers/workload.js';
import { ChildRun, ExportWriter, capturedAtMs, firstJson, waitUntil } from './replication-harness.js';

export const MiB = 2 ** 20;
const CLI = join(repoRoot, 'test', 'agent', 'lifeboat-cli.ts');
const DISK_NAME = 'sda';
const PASSPHRASE = 'network-cut-Passphrase-83';
/** Ports inside namespace b: the namespace is new, so nothing else can hold them. */
const API_PORT = 8720;
const PROCESS_SERVER_PORT = 9443;

export type TimedAgentEvent = AgentEvent & { readonly at: string };

/** Fails the test, naming what is missing, unless it runs as root. */
export function requireRoot(why: string): void {
  if (process.getuid?.() !== 0) throw new Error(`${why} needs root: run this test as root (it is never skipped)`);
}

/** The agent's `--json` event lines so far (a line cut short by a kill is left out). */
export function agentEvents(run: ChildRun): TimedAgentEvent[] {
  return run.stdout
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as TimedAgentEvent];
      } catch {
        return [];
      }
    });
}

/** Full compares and lost continuity after the first full cut of the first run: a resync the agent should not have needed. */
export function resyncsAfterStart(events: readonly TimedAgentEvent[]): string[] {
  const problems: string[] = [];
  let sawFirstFull = false;
  for (const e of events) {
    if (e.event === 'cut-started' && e.full) {
      if (!sawFirstFull) sawFirstFull = true;
      else problems.push(`full compare started at ${e.at} (cut ${e.cutId}, from sequence ${e.firstSequence})`);
    }
    if (e.event === 'tracker-opened' && sawFirstFull) problems.push(`tracker reopened (${e.continuity}) at ${e.at}`);
  }
  return problems;
}

/** The `lifeboat_process_server_*` gauges and counters of a /metrics text, without the prefix. */
export function processServerFigures(metricsText: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of metricsText.split('\n')) {
    const m = /^lifeboat_process_server_([a-z_]+) (\S+)$/.exec(line);
    if (m) out[m[1] as string] = Number(m[2]);
  }
  return out;
}

export interface AlertRow {
  readonly id: string;
  readonly kind: string;
  readonly severity: string;
  readonly subjectId: string;
  readonly message: string;
  readonly raisedAt: string;
  readonly clearedAt: string | null;
}

/** The calls the tests make, whichever way the API is reached. */
export interface ApiCaller {
  api(method: string, path: string, body?: unknown, expect?: number, auth?: boolean): Promise<Record<string, unknown>>;
  /** GET of a text resource (e.g. /metrics) with the admin token. */
  text(path: string): Promise<string>;
}

/** Every alert (open and cleared) of one kind about one subject. */
export async function alertsAbout(api: ApiCaller, kind: string, subjectId: string): Promise<AlertRow[]> {
  const page = await api.api('GET', '/api/v1/alerts?status=all&limit=200');
  return ((page.items ?? []) as AlertRow[]).filter((a) => a.kind === kind && a.subjectId === subjectId);
}

/** Figures sampled over time; `peak(name)` is the highest value seen. */
export class Sampler {
  readonly samples: { readonly atMs: number; readonly values: Readonly<Record<string, number>> }[] = [];

  add(values: Readonly<Record<string, number>>, atMs = Date.now()): void {
    this.samples.push({ atMs, values });
  }

  peak(name: string, fromMs = 0, toMs = Number.POSITIVE_INFINITY): number {
    let best = Number.NEGATIVE_INFINITY;
    for (const s of this.samples) {
      const v = s.values[name];
      if (s.atMs >= fromMs && s.atMs <= toMs && v !== undefined && Number.isFinite(v)) best = Math.max(best, v);
    }
    return best;
  }

  /** The first sample at or after `fromMs` for which `pred` holds. */
  firstWhere(fromMs: number, pred: (values: Readonly<Record<string, number>>) => boolean): { atMs: number; values: Readonly<Record<string, number>> } | undefined {
    return this.samples.find((s) => s.atMs >= fromMs && pred(s.values));
  }

  /** A short table of the samples, for failure messages. */
  describe(names: readonly string[], originMs: number): string {
    return this.samples.map((s) => `t=${((s.atMs - originMs) / 1000).toFixed(1)}s ${names.map((n) => `${n}=${s.values[n] ?? '-'}`).join(' ')}`).join('\n');
  }
}

/** Runs `probe` every `intervalMs` until stop(); errors are counted, never thrown (the service may be down on purpose). */
export function every(intervalMs: number, probe: () => Promise<void>): { stop(): Promise<void>; errors: () => number } {
  let stopped = false;
  let errors = 0;
  const loop = (async () => {
    while (!stopped) {
      const started = Date.now();
      try {
        await probe();
      } catch {
        errors++;
      }
      const rest = intervalMs - (Date.now() - started);
      if (rest > 0 && !stopped) await new Promise((r) => setTimeout(r, rest));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
    },
    errors: () => errors,
  };
}

// ---------------------------------------------------------------------------
// Store reads (the test opens the vault's store with its passphrase)

export async function openStore(storeUrl: string, passphrase: string): Promise<Repository> {
  return Repository.open(await openStorage(storeUrl), passphrase);
}

/** The whole disk of a point, restored. */
export async function restorePoint(repo: Repository, point: PointManifest): Promise<Buffer> {
  repo.forgetChunkIndex();
  const reader = await PointReader.open(repo, point, { workers: 0 });
  try {
    reader.checkComplete();
    return await reader.read(0, point.diskSizeBytes);
  } finally {
    await reader.close();
  }
}

/** The records' region of a restored disk checked against the writer, up to the point's capture time. */
export function verifyRestored(disk: Buffer, acked: AckLog, point: PointManifest): Promise<ImageReport> {
  const end = acked.layout.offsetBytes + acked.layout.slotCount * RECORD_BYTES;
  return verifyImage(disk.subarray(0, end), acked, { upToTime: capturedAtMs(point) });
}

// ---------------------------------------------------------------------------
// The replication path across two network namespaces

export interface NetnsRigOptions {
  readonly name: string;
  readonly seed: number;
  /** Sparse protected disk; default 64 MiB. */
  readonly imageBytes?: number;
  /** Record slots of 4 KiB; default 1024. */
  readonly slotCount?: number;
  /** Where slot 0 starts; default 1 MiB. */
  readonly recordOffsetBytes?: number;
  readonly rpoThresholdSeconds: number;
  readonly crashConsistentFrequencySeconds: number;
}

/** A Unix-socket to TCP forwarder, run in namespace b so the host namespace reaches the API. */
const FORWARDER = `
const net = require('node:net');
const [socketPath, host, port] = process.argv.slice(1);
net.createServer((c) => {
  const up = net.connect(Number(port), host);
  c.pipe(up).pipe(c);
  up.on('error', () => c.destroy());
  c.on('error', () => up.destroy());
}).listen(socketPath, () => process.stdout.write('ready\\n'));
`;

export class NetnsRig implements ApiCaller {
  readonly dir: string;
  readonly image: string;
  readonly socketPath: string;
  readonly apiSocketPath: string;
  readonly storeUrl: string;
  readonly logPath: string;
  readonly writer: ExportWriter;
  server: ChildRun | undefined;
  forwarder: ChildRun | undefined;
  agent: ChildRun | undefined;
  adminToken = '';
  vaultId = '';
  policyId = '';
  itemId = '';
  private repo: Repository | undefined;
  private readonly cleanupDir: () => void;

  private constructor(
    readonly link: NetnsLink,
    readonly options: NetnsRigOptions,
  ) {
    const tmp = makeTempDir(options.name);
    this.dir = tmp.path;
    this.cleanupDir = tmp.cleanup;
    this.image = join(this.dir, 'sda.img');
    this.socketPath = join(this.dir, 'sda.sock');
    this.apiSocketPath = join(this.dir, 'api.sock');
    this.storeUrl = `file://${join(this.dir, 'store')}`;
    this.logPath = join(this.dir, 'processes.log');
    const slotCount = options.slotCount ?? 1024;
    const offsetBytes = options.recordOffsetBytes ?? MiB;
    if (offsetBytes + slotCount * RECORD_BYTES > (options.imageBytes ?? 64 * MiB)) throw new Error('the record slots do not fit in the image');
    this.writer = new ExportWriter(this.socketPath, { seed: options.seed >>> 0, slotCount, offsetBytes });
  }

  /** The vault as the agent sees it, across the link. */
  get vaultUrl(): string {
    return `http://${this.link.b.ip}:${API_PORT}`;
  }

  get storeDisk(): string {
    return `${this.itemId}.${DISK_NAME}`;
  }

  /** Creates the namespaces, starts server and agent, and waits for the item to be protected with a first point. */
  static async start(options: NetnsRigOptions): Promise<NetnsRig> {
    requireRoot('a network-cut test (ip netns add, ip link set)');
    requireTool('ip', 'iproute2');
    const link = await createLink();
    const rig = new NetnsRig(link, options);
    try {
      await rig.setUp();
    } catch (err) {
      await rig.close({ keepDir: true });
      throw new Error(`the two-namespace replication rig did not come up (logs in ${rig.logPath}): ${String(err)}`, { cause: err });
    }
    return rig;
  }

  private spawnCli(name: string, ns: 'a' | 'b', args: readonly string[]): ChildRun {
    const child = this.link.spawn(ns, process.execPath, ['--import', 'tsx', CLI, ...args], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: process.env.TMPDIR, LIFEBOAT_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new ChildRun(name, child, this.logPath);
  }

  private async setUp(): Promise<void> {
    writeFileSync(this.logPath, '');
    writeFileSync(this.image, '');
    truncateSync(this.image, this.options.imageBytes ?? 64 * MiB);

    const server = this.spawnCli('server', 'b', [
      'server',
      '--data-dir',
      join(this.dir, 'vault'),
      '--listen',
      `${this.link.b.ip}:${API_PORT}`,
      '--process-server-port',
      String(PROCESS_SERVER_PORT),
      '--spool-dir',
      join(this.dir, 'spool'),
      '--json',
    ]);
    this.server = server;
    const started = await firstJson<{ adminToken: string | null }>(server, 'lifeboat server (namespace b) to print its address', 'lifeboat server');
    this.adminToken = String(started.adminToken);

    const forwarder = new ChildRun(
      'api-forwarder',
      this.link.spawn('b', process.execPath, ['-e', FORWARDER, this.apiSocketPath, this.link.b.ip, String(API_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] }),
      this.logPath,
    );
    this.forwarder = forwarder;
    await waitUntil('the API forwarder', () => {
      if (!forwarder.running) throw new Error(`the API forwarder exited\n${forwarder.tail()}`);
      return forwarder.stdout.includes('ready');
    }, 10_000, 20);

    const vault = await this.api('POST', '/api/v1/vaults', { name: 'netcut', location: 'local', storeUrl: this.storeUrl, storePassphrase: PASSPHRASE }, 201);
    this.vaultId = String(vault.id);
    const policy = await this.api(
      'POST',
      '/api/v1/policies',
      {
        vaultId: this.vaultId,
        name: 'fast',
        rpoThresholdSeconds: this.options.rpoThresholdSeconds,
        retentionHours: 24,
        appConsistentFrequencyMinutes: 0,
        crashConsistentFrequencySeconds: this.options.crashConsistentFrequencySeconds,
      },
      201,
    );
    this.policyId = String(policy.id);
    const key = await this.api('POST', `/api/v1/vaults/${this.vaultId}/registration-keys`, {}, 201);
    const registered = await this.api(
      'POST',
      '/api/v1/config-servers/register',
      { registrationKey: String(key.key), name: 'cs-netcut', address: this.link.b.ip, version: '0.1.0', clock: new Date().toISOString() },
      201,
      false,
    );
    const configServerId = String((registered.server as { id: string }).id);
    const machine = await this.api('POST', '/api/v1/machines', { configServerId, name: 'protected-a', privateIp: this.link.a.ip, os: 'debian-12', kernel: '6.1.0-18-amd64' }, 201);
    const enabled = await this.api('POST', '/api/v1/replication/enable', { vaultId: this.vaultId, policyId: this.policyId, configServerId, install: 'manual', machines: [String(machine.id)] }, 202);
    this.itemId = String((enabled.items as { id: string }[])[0]?.id);
    const token = await this.api('POST', `/api/v1/items/${this.itemId}/enrollment-token`, {}, 201);
    const tokenFile = join(this.dir, 'enrollment-token');
    writeFileSync(tokenFile, `${String(token.token)}\n`, { mode: 0o600 });
    const config = join(this.dir, 'agent.json');
    writeFileSync(config, JSON.stringify({ disks: [{ name: DISK_NAME, tracker: { kind: 'journal', path: this.image, socketPath: this.socketPath } }] }));
    const stateDir = join(this.dir, 'agent');
    mkdirSync(stateDir, { recursive: true });

    const agent = this.spawnCli('agent', 'a', ['agent', 'run', '--state-dir', stateDir, '--config', config, '--json', '--vault', this.vaultUrl, '--item', this.itemId, '--token-file', tokenFile]);
    this.agent = agent;
    await waitUntil(
      'the agent (namespace a) to serve its NBD export',
      async () => {
        if (!agent.running) throw new Error(`lifeboat agent run exited ${JSON.stringify(agent.exit)}\n${agent.tail()}`);
        if (!existsSync(this.socketPath) || !agent.stdout.includes('"tracker-opened"')) return undefined;
        const c = await NbdClient.connect({ target: { socketPath: this.socketPath }, exportName: 'disk', timeoutMs: 5000 });
        await c.close();
        return true;
      },
      60_000,
      50,
    );
    await this.waitForPoint(0, 120_000);
    await waitUntil('the item to be protected', async () => (await this.api('GET', `/api/v1/items/${this.itemId}`)).state === 'protected', 60_000, 250);
  }

  agentEvents(): TimedAgentEvent[] {
    return this.agent ? agentEvents(this.agent) : [];
  }

  async api(method: string, path: string, body?: unknown, expect = 200, auth = true): Promise<Record<string, unknown>> {
    const { status, text } = await this.httpOverSocket(method, path, body, auth);
    if (status !== expect) throw new Error(`${method} ${path}: ${status} (expected ${expect}): ${text}`);
    return text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
  }

  async text(path: string): Promise<string> {
    const { status, text } = await this.httpOverSocket('GET', path, undefined, true);
    if (status !== 200) throw new Error(`GET ${path}: ${status}: ${text}`);
    return text;
  }

  private httpOverSocket(method: string, path: string, body: unknown, auth: boolean): Promise<{ status: number; text: string }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.apiSocketPath,
          method,
          path,
          headers: {
            host: `${this.link.b.ip}:${API_PORT}`,
            ...(auth ? { authorization: `Bearer ${this.adminToken}` } : {}),
            ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
          },
          timeout: 15_000,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 15 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  async store(): Promise<Repository> {
    this.repo ??= await openStore(this.storeUrl, PASSPHRASE);
    return this.repo;
  }

  async latestPoint(): Promise<PointManifest | undefined> {
    return (await this.store()).latestPoint(this.storeDisk);
  }

  async waitForPoint(capturedAfterMs: number, timeoutMs = 60_000): Promise<PointManifest> {
    return waitUntil(
      `a point captured after ${new Date(capturedAfterMs).toISOString()}`,
      async () => {
        const p = await this.latestPoint();
        return p && capturedAtMs(p) > capturedAfterMs ? p : undefined;
      },
      timeoutMs,
      200,
    );
  }

  async verifyStore(full = true): Promise<VerifyReport> {
    return verifyStore(await openStore(this.storeUrl, PASSPHRASE), { full });
  }

  /** Stops the writer and the processes (SIGTERM, then SIGKILL), deletes the namespaces, and the directory unless `keepDir`. */
  async close(options: { keepDir?: boolean } = {}): Promise<void> {
    await this.writer.stop().catch(() => undefined);
    await this.link.setLinkUp().catch(() => undefined);
    await this.agent?.stop(10_000);
    await this.server?.stop(10_000);
    await this.forwarder?.stop(2000);
    await this.link.destroy();
    if (!options.keepDir) this.cleanupDir();
  }
}
