/**
 * Control-plane load (issue 3, "Benchmarks"): one real `lifeboat server` on SQLite,
 * N registered configuration servers ("agents") heartbeating every 30 s with jitter
 * (an open loop: the send times do not wait for answers), and R API readers looping
 * over list routes with an owner token (a closed loop: each reader sends its next
 * request when the last one answered). Everything goes over 127.0.0.1 with
 * keep-alive; the run is bounded by request count and time, and the server is
 * stopped at the end whatever happens.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { BENCH_DIR, ROOT } from './paths.js';

export interface ControlPlaneOptions {
  /** Registered configuration servers, each heartbeating every `heartbeatIntervalMs`. */
  readonly agents: number;
  /** Concurrent API readers (closed loop, no think time). */
  readonly readers: number;
  /** Measured window, after the warm-up. */
  readonly durationS: number;
  readonly warmupS: number;
}

export const CONTROL_PLANE_DEFAULTS: ControlPlaneOptions = Object.freeze({ agents: 2000, readers: 50, durationS: 60, warmupS: 10 });

const HEARTBEAT_INTERVAL_MS = 30_000;
/** Each heartbeat lands uniformly within ±JITTER of its 30 s slot. */
const HEARTBEAT_JITTER_MS = 2_000;
const AGENTS_PER_KEY = 500;
const REGISTRATION_CONCURRENCY = 16;
const REQUEST_TIMEOUT_MS = 10_000;
const SERVER_START_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 10_000;
/** Hard cap on requests sent in the whole run, whatever the load generator computes. */
const MAX_REQUESTS = 5_000_000;
const GOAL_P99_MS = 50;

/** The read routes every reader cycles through (one list request each). */
export const READ_ROUTES = ['/api/v1/items', '/api/v1/jobs', '/api/v1/alerts', '/api/v1/config-servers', '/api/v1/policies'] as const;

export interface LatencySummary {
  readonly count: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface ControlPlaneResults {
  readonly commandLine: string;
  readonly startedAt: string;
  readonly options: ControlPlaneOptions;
  readonly machine: { cpu: string; nproc: number; memory: string; kernel: string; node: string; loadAverage: string };
  readonly setupS: number;
  readonly windowS: number;
  readonly heartbeats: LatencySummary;
  readonly reads: LatencySummary;
  readonly readsByRoute: Readonly<Record<string, LatencySummary & { meanBytes: number }>>;
  /** Non-2xx answers and transport failures inside the window, by status ("ECONNRESET", "timeout", ...). */
  readonly errors: Readonly<Record<string, number>>;
  readonly setupErrors: Readonly<Record<string, number>>;
  readonly server: { cpuPercentOfOneCore: number; cpuSeconds: number; peakRssMiB: number; windowMaxRssMiB: number };
  readonly loadGenerator: { cpuPercentOfOneCore: number };
  readonly goalMet: boolean;
}

interface Answer {
  readonly status: number;
  readonly body: string;
}

/** One HTTP exchange over a keep-alive agent; rejects on transport errors and after REQUEST_TIMEOUT_MS. */
function send(agent: Agent, port: number, method: string, path: string, token: string | undefined, body?: unknown): Promise<Answer> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    // The deadline covers the whole exchange, time queued for a socket included
    // (req.setTimeout would only start once a socket is assigned).
    const timer = setTimeout(() => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })), REQUEST_TIMEOUT_MS);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end(payload);
  });
}

async function sendOk<T>(agent: Agent, port: number, method: string, path: string, token: string | undefined, body?: unknown): Promise<T> {
  const res = await send(agent, port, method, path, token, body);
  if (res.status < 200 || res.status > 299) throw new Error(`${method} ${path}: HTTP ${res.status}: ${res.body.slice(0, 300)}`);
  return (res.body === '' ? undefined : JSON.parse(res.body)) as T;
}

function errorKey(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : (e as Error).message;
}

/** Nearest-rank percentiles of a latency sample. */
export function summarize(samplesMs: number[], windowS: number): LatencySummary {
  const sorted = Float64Array.from(samplesMs).sort();
  const at = (q: number) => (sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number));
  return {
    count: sorted.length,
    perSecond: windowS > 0 ? sorted.length / windowS : 0,
    p50Ms: at(0.5),
    p90Ms: at(0.9),
    p99Ms: at(0.99),
    maxMs: sorted.length === 0 ? 0 : (sorted[sorted.length - 1] as number),
  };
}

interface ServerProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly adminToken: string;
  stop(): Promise<void>;
}

/** Starts `lifeboat server --json` and waits for the JSON it prints (URL and the first admin token). */
async function startServer(dataDir: string, log: (msg: string) => void): Promise<ServerProcess> {
  const bin = join(ROOT, 'bin', 'lifeboat.js');
  const child = spawn(process.execPath, [bin, 'server', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--json'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOME: join(dataDir, 'home') },
  });
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => {
    exited = true;
  });
  // Last resort if the bench process dies without reaching `stop` (no orphan servers).
  const killOnExit = () => {
    if (!exited) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  // A signal ends the bench without 'exit' hooks running: stop the server, then exit as the signal would.
  const onSignal = (signal: NodeJS.Signals) => {
    killOnExit();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const stop = async () => {
    process.off('exit', killOnExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), SERVER_STOP_TIMEOUT_MS);
    await exitedPromise;
    clearTimeout(timer);
    log(`control plane: server ${child.pid} stopped`);
  };
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString('utf8')).slice(-4000);
  });
  try {
    const started = await new Promise<{ url: string; adminToken: string | null }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`lifeboat server printed no URL within ${SERVER_START_TIMEOUT_MS} ms; stderr: ${stderr}`)), SERVER_START_TIMEOUT_MS);
      child.stdout?.on('data', (c: Buffer) => {
        stdout += c.toString('utf8');
        try {
          const parsed = JSON.parse(stdout) as { url: string; adminToken: string | null };
          clearTimeout(timer);
          resolve(parsed);
        } catch {
          // The JSON document is not complete yet.
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`lifeboat server exited (${code ?? signal}) before listening; stderr: ${stderr}`));
      });
    });
    if (!started.adminToken) throw new Error('lifeboat server printed no admin token (the data directory was not fresh)');
    const port = Number(new URL(started.url).port);
    log(`control plane: server ${child.pid} listening at ${started.url}`);
    return { child, port, adminToken: started.adminToken, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15). */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so field 14 is fields[11].
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
}

/** USER_HZ: 100 on every Linux architecture Node supports. */
const CLOCK_TICKS_PER_S = 100;

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

interface Registered {
  readonly id: string;
  readonly credential: string;
}

/** Vault, registration keys, a few policies and N configuration servers, all through the API. */
async function setUp(agent: Agent, port: number, token: string, dataDir: string, agents: number, setupErrors: Map<string, number>, log: (msg: string) => void): Promise<Registered[]> {
  const storeDir = join(dataDir, 'store');
  mkdirSync(storeDir, { recursive: true });
  const vault = await sendOk<{ id: string }>(agent, port, 'POST', '/api/v1/vaults', token, { name: 'bench-vault', location: 'bench', storeUrl: `file://${storeDir}` });
  for (let i = 0; i < 5; i++) await sendOk(agent, port, 'POST', '/api/v1/policies', token, { vaultId: vault.id, name: `bench-policy-${i}` });
  const keys: string[] = [];
  for (let i = 0; i < Math.ceil(agents / AGENTS_PER_KEY); i++) {
    keys.push((await sendOk<{ key: string }>(agent, port, 'POST', `/api/v1/vaults/${vault.id}/registration-keys`, token, {})).key);
  }
  const registered: Registered[] = new Array<Registered>(agents);
  let next = 0;
  const worker = async () => {
    while (next < agents) {
      const i = next++;
      const body = {
        registrationKey: keys[Math.floor(i / AGENTS_PER_KEY)],
        name: `bench-cs-${String(i).padStart(5, '0')}`,
        address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
        version: '0.1.0',
        clock: new Date().toISOString(),
      };
      // A failed registration is retried once, then the run stops: every agent must exist.
      for (let attempt = 0; ; attempt++) {
        try {
          const res = await sendOk<{ server: { id: string }; credential: string }>(agent, port, 'POST', '/api/v1/config-servers/register', undefined, body);
          registered[i] = { id: res.server.id, credential: res.credential };
          break;
        } catch (e) {
          count(setupErrors, errorKey(e));
          if (attempt >= 1) throw e;
        }
      }
      if ((i + 1) % 500 === 0) log(`control plane: ${i + 1}/${agents} configuration servers registered`);
    }
  };
  await Promise.all(Array.from({ length: REGISTRATION_CONCURRENCY }, worker));
  return registered;
}

export async function runControlPlane(opts: ControlPlaneOptions, commandLine: string, log: (msg: string) => void): Promise<ControlPlaneResults> {
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg()[0] ?? 0;
  const dataDir = join(BENCH_DIR, 'control-plane', startedAt.replace(/[:.]/g, '-'));
  mkdirSync(dataDir, { recursive: true });
  const setupStartMs = Date.now();
  const server = await startServer(dataDir, log);
  // Heartbeats and reads have separate socket pools, as separate machines would.
  const heartbeatAgent = new Agent({ keepAlive: true, maxSockets: 256 });
  const readerAgent = new Agent({ keepAlive: true, maxSockets: Math.max(1, opts.readers) });
  try {
    const setupErrors = new Map<string, number>();
    const agents = await setUp(readerAgent, server.port, server.adminToken, dataDir, opts.agents, setupErrors, log);
    const setupS = (Date.now() - setupStartMs) / 1000;
    log(`control plane: set up in ${setupS.toFixed(1)} s; ${opts.warmupS} s warm-up, then ${opts.durationS} s measured`);

    const t0 = performance.now();
    const windowStart = t0 + opts.warmupS * 1000;
    const windowEnd = windowStart + opts.durationS * 1000;
    const heartbeatMs: number[] = [];
    const readMs: number[] = [];
    const byRoute = new Map<string, { ms: number[]; bytes: number }>(READ_ROUTES.map((r) => [r, { ms: [], bytes: 0 }]));
    const errors = new Map<string, number>();
    let sent = 0;
    const inFlight = new Set<Promise<void>>();

    const measure = async (kind: 'heartbeat' | 'read', path: string, exchange: () => Promise<Answer>): Promise<void> => {
      const start = performance.now();
      const counted = start >= windowStart && start < windowEnd;
      sent++;
      let key: string | undefined;
      let bytes = 0;
      try {
        const res = await exchange();
        bytes = res.body.length;
        if (res.status < 200 || res.status > 299) key = `${res.status} ${kind} ${kind === 'read' ? path : 'heartbeat'}`;
      } catch (e) {
        key = `${errorKey(e)} ${kind}`;
      }
      if (!counted) return;
      const ms = performance.now() - start;
      if (key !== undefined) count(errors, key);
      if (kind === 'heartbeat') heartbeatMs.push(ms);
      else {
        readMs.push(ms);
        const r = byRoute.get(path);
        if (r) {
          r.ms.push(ms);
          r.bytes += bytes;
        }
      }
    };

    // Open loop: agent i first beats at i/N of the interval (spread evenly), then every
    // interval ± jitter; a scheduler tick sends whatever is due.
    const nextBeat = Float64Array.from(agents, (_, i) => t0 + (i / agents.length) * HEARTBEAT_INTERVAL_MS);
    const order = agents.map((_, i) => i);
    const heartbeatLoop = async () => {
      while (performance.now() < windowEnd && sent < MAX_REQUESTS) {
        const now = performance.now();
        for (const i of order) {
          if ((nextBeat[i] as number) > now) continue;
          nextBeat[i] = (nextBeat[i] as number) + HEARTBEAT_INTERVAL_MS + (Math.random() * 2 - 1) * HEARTBEAT_JITTER_MS;
          const a = agents[i] as Registered;
          const p = measure('heartbeat', 'heartbeat', () =>
            send(heartbeatAgent, server.port, 'POST', `/api/v1/config-servers/${a.id}/heartbeat`, a.credential, {
              version: '0.1.0',
              clock: new Date().toISOString(),
              processServers: [{ name: 'built-in', spoolUsedBytes: 1024 ** 3, spoolLimitBytes: 64 * 1024 ** 3, throughputBytesPerSec: 50 * 1024 ** 2 }],
            }),
          );
          inFlight.add(p);
          void p.finally(() => inFlight.delete(p));
        }
        await sleep(5);
      }
    };
    // Closed loop: reader r cycles through the read routes starting at route r mod 5.
    const readerLoop = async (r: number) => {
      for (let k = r; performance.now() < windowEnd && sent < MAX_REQUESTS; k++) {
        const path = READ_ROUTES[k % READ_ROUTES.length] as string;
        await measure('read', path, () => send(readerAgent, server.port, 'GET', path, server.adminToken));
      }
    };

    let cpuStart = 0;
    let selfCpuStart = process.cpuUsage();
    let windowMaxRssKiB = 0;
    let sampling = true;
    const sampler = (async () => {
      while (performance.now() < windowStart) await sleep(Math.max(0, Math.min(100, windowStart - performance.now())));
      cpuStart = processCpuSeconds(server.child.pid as number);
      selfCpuStart = process.cpuUsage();
      while (sampling && performance.now() < windowEnd) {
        windowMaxRssKiB = Math.max(windowMaxRssKiB, statusKiB(server.child.pid as number, 'VmRSS'));
        await sleep(Math.max(0, Math.min(500, windowEnd - performance.now())));
      }
      return { cpuEnd: processCpuSeconds(server.child.pid as number), selfCpu: process.cpuUsage(selfCpuStart), at: performance.now() };
    })();
    let sampled;
    try {
      await Promise.all([heartbeatLoop(), ...Array.from({ length: opts.readers }, (_, r) => readerLoop(r))]);
    } finally {
      sampling = false;
      sampled = await sampler;
    }
    await Promise.allSettled([...inFlight]);
    const windowS = opts.durationS;
    const cpuSeconds = sampled.cpuEnd - cpuStart;
    const measuredS = (sampled.at - windowStart) / 1000;
    const heartbeats = summarize(heartbeatMs, windowS);
    const reads = summarize(readMs, windowS);
    const readsByRoute = Object.fromEntries(
      [...byRoute].map(([path, r]) => [path, { ...summarize(r.ms, windowS), meanBytes: r.ms.length ? Math.round(r.bytes / r.ms.length) : 0 }]),
    );
    return {
      commandLine,
      startedAt,
      options: opts,
      machine: {
        cpu: cpus()[0]?.model ?? 'unknown',
        nproc: availableParallelism(),
        memory: `${(totalmem() / 1024 ** 3).toFixed(1)} GiB`,
        kernel: `Linux ${release()}`,
        node: process.version,
        loadAverage: `${loadAtStart.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end`,
      },
      setupS,
      windowS,
      heartbeats,
      reads,
      readsByRoute,
      errors: Object.fromEntries(errors),
      setupErrors: Object.fromEntries(setupErrors),
      server: {
        cpuSeconds,
        cpuPercentOfOneCore: (100 * cpuSeconds) / measuredS,
        peakRssMiB: statusKiB(server.child.pid as number, 'VmHWM') / 1024,
        windowMaxRssMiB: windowMaxRssKiB / 1024,
      },
      loadGenerator: { cpuPercentOfOneCore: (100 * (sampled.selfCpu.user + sampled.selfCpu.system)) / 1e6 / measuredS },
      goalMet: heartbeats.count > 0 && reads.count > 0 && heartbeats.p99Ms < GOAL_P99_MS && reads.p99Ms < GOAL_P99_MS && errors.size === 0,
    };
  } finally {
    heartbeatAgent.destroy();
    readerAgent.destroy();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const ms = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
const row = (name: string, s: LatencySummary) => `| ${name} | ${s.count} | ${s.perSecond.toFixed(1)} | ${ms(s.p50Ms)} | ${ms(s.p90Ms)} | ${ms(s.p99Ms)} | ${ms(s.maxMs)} |`;

export function renderControlPlane(r: ControlPlaneResults): string {
  const o = r.options;
  const errors = Object.entries(r.errors);
  const lines = [
    '## Control plane',
    '',
    `Command: \`${r.commandLine}\`, started ${r.startedAt}. ${o.agents} configuration servers heartbeating every 30 s ± 2 s, ` +
      `${o.readers} readers looping over ${READ_ROUTES.length} list routes, ${o.warmupS} s warm-up then ${r.windowS} s measured; set-up took ${r.setupS.toFixed(1)} s.`,
    '',
    `Machine: ${r.machine.cpu}, ${r.machine.nproc} CPUs, ${r.machine.memory}, ${r.machine.kernel}, Node ${r.machine.node}; load average ${r.machine.loadAverage}. ` +
      'The load generator runs on the same machine.',
    '',
    '| traffic | requests | per second | p50 ms | p90 ms | p99 ms | max ms |',
    '|---|---:|---:|---:|---:|---:|---:|',
    row('heartbeats', r.heartbeats),
    row('reads (all routes)', r.reads),
    ...Object.entries(r.readsByRoute).map(([path, s]) => row(`GET ${path} (${s.meanBytes} B)`, s)),
    '',
    '| server | value |',
    '|---|---:|',
    `| CPU (user+sys over the window) | ${r.server.cpuPercentOfOneCore.toFixed(0)} % of one core (${r.server.cpuSeconds.toFixed(1)} s) |`,
    `| peak RSS (VmHWM, whole run) | ${r.server.peakRssMiB.toFixed(0)} MiB |`,
    `| max RSS sampled in the window | ${r.server.windowMaxRssMiB.toFixed(0)} MiB |`,
    `| load generator CPU | ${r.loadGenerator.cpuPercentOfOneCore.toFixed(0)} % of one core |`,
    '',
    `Errors in the window: ${errors.length === 0 ? 'none' : errors.map(([k, n]) => `${k}: ${n}`).join(', ')}.` +
      (Object.keys(r.setupErrors).length ? ` Set-up retries: ${Object.entries(r.setupErrors).map(([k, n]) => `${k}: ${n}`).join(', ')}.` : ''),
    '',
    `| goal | heartbeats | reads | result |`,
    '|---|---:|---:|---|',
    `| p99 < ${GOAL_P99_MS} ms, no errors | ${ms(r.heartbeats.p99Ms)} ms | ${ms(r.reads.p99Ms)} ms | ${r.goalMet ? 'met' : 'missed'} |`,
    '',
  ];
  return lines.join('\n');
}
