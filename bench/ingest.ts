/**
 * Process-server ingest benchmark: N agent streams (one TLS connection and one
 * disk each) send segments of compressible random data (about 50 % under zstd)
 * to a process server running in its own process, with a local fs store. It
 * reports MB/s acknowledged (spooled and fsynced: what the agents see) and
 * uploaded (sealed on worker threads and in the store: end to end).
 *
 *   node --import tsx bench/ingest.ts [--streams 1,2,4] [--mib 256] [--segment-mib 4] [--workers 2]
 *   npm run -s bench -- --ingest [--ingest-streams 4,8] [--ingest-mib 256]
 *
 * MB are 10^6 bytes of segment data (extent payload; frame headers excluded).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { LifeboatError } from '../src/core/errors.js';
import { encode } from '../src/format/codec.js';
import { FsStorage } from '../src/storage/fs/fs-storage.js';
import { Repository } from '../src/store/repository.js';
import { listSegments } from '../src/store/journal.js';
import { startProcessServer, type ProcessServerStats } from '../src/process-server/server.js';
import type { AgentGrant, ProcessServerBackend } from '../src/process-server/backend.js';
import { ReplicationClient } from '../src/protocol/client.js';
import type { OutgoingSegment } from '../src/protocol/messages.js';
import { TestCa } from '../test/helpers/pki.js';
import { BENCH_DIR } from './paths.js';

const PASS = 'bench passphrase';
const MACHINE = 'bench-machine';
const VAULT = 'bench-vault';
const MiB = 1024 * 1024;

interface ChildConfig {
  storeUrl: string;
  spoolDir: string;
  certPem: string;
  keyPem: string;
  caPem: string;
  serial: string;
  disks: string[];
  workers: number;
}

/** The process server side: runs in a child process so agents and server do not share one event loop. */
async function serve(configPath: string): Promise<void> {
  const config = JSON.parse(await readFile(configPath, 'utf8')) as ChildConfig;
  const repo = await Repository.open(await FsStorage.open(config.storeUrl), PASS);
  const grant: AgentGrant = { machineId: MACHINE, itemId: 'bench', vaultId: VAULT, generation: 1, disks: config.disks };
  const backend: ProcessServerBackend = {
    async authorize({ machineId, certificateSerial }) {
      if (machineId !== MACHINE || certificateSerial !== config.serial) throw new LifeboatError('AGENT_UNAUTHORIZED', 'unknown agent');
      return grant;
    },
    async repository() {
      return repo;
    },
  };
  const server = await startProcessServer({
    host: '127.0.0.1',
    port: 0,
    tls: { certPem: config.certPem, keyPem: config.keyPem, caPem: config.caPem },
    spoolDir: config.spoolDir,
    spoolLimitBytes: 8 * 1024 * MiB,
    workers: config.workers,
    uploadConcurrency: config.workers,
    backend,
  });
  process.stdout.write(JSON.stringify({ port: server.port }) + '\n');
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'drain') await server.drained();
    process.stdout.write(JSON.stringify(server.stats()) + '\n');
  }
  await server.close();
}

/** Segment payloads: per 4 KiB, 2 KiB random and 2 KiB of a repeated pattern (≈ 50 % under zstd). */
function payloads(count: number, bytes: number): Buffer[] {
  return Array.from({ length: count }, () => {
    const b = Buffer.alloc(bytes);
    for (let at = 0; at < bytes; at += 4096) {
      randomBytes(2048).copy(b, at);
      b.fill(0x5a, at + 2048, Math.min(bytes, at + 4096));
    }
    return b;
  });
}

class Child {
  private readonly lines: AsyncIterator<string>;
  constructor(readonly process: ChildProcess) {
    this.lines = createInterface({ input: process.stdout! })[Symbol.asyncIterator]();
  }
  async next<T>(): Promise<T> {
    const r = await this.lines.next();
    if (r.done) throw new Error('the process server exited');
    return JSON.parse(r.value) as T;
  }
  async ask<T>(line: string): Promise<T> {
    this.process.stdin!.write(line + '\n');
    return this.next<T>();
  }
}

export interface Row {
  streams: number;
  segmentMiB: number;
  dataMB: number;
  ackedMBps: number;
  uploadedMBps: number;
  storedMB: number;
  spoolPeakMiB: number;
  /** The process server's user + system time over the run (until drained), as a percentage of one core. */
  serverCpuPercent: number;
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process, seconds (/proc/<pid>/stat). */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

async function run(streams: number, perStreamBytes: number, segmentBytes: number, workers: number, ca: TestCa, data: Buffer[]): Promise<Row> {
  const dir = join(BENCH_DIR, 'ingest', `s${streams}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const storeUrl = pathToFileURL(join(dir, 'store')).href;
  const storage = await FsStorage.open(storeUrl);
  const { repo } = await Repository.init(storage, { passphrase: PASS, scrypt: { N: 2 ** 10, r: 8, p: 1 } });
  const server = await ca.serverCert();
  const agent = await ca.agentCert(MACHINE);
  const disks = Array.from({ length: streams }, (_, i) => `bench.disk${i}`);
  const config: ChildConfig = {
    storeUrl,
    spoolDir: join(dir, 'spool'),
    certPem: server.certPem,
    keyPem: server.keyPem,
    caPem: ca.caPem,
    serial: agent.serial,
    disks,
    workers,
  };
  const configPath = join(dir, 'config.json');
  await writeFile(configPath, JSON.stringify(config));
  const child = new Child(spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve', configPath], { stdio: ['pipe', 'pipe', 'inherit'] }));
  try {
    const { port } = await child.next<{ port: number }>();
    let spoolPeak = 0;
    const poll = setInterval(() => {
      void child.ask<ProcessServerStats>('stats').then((s) => (spoolPeak = Math.max(spoolPeak, s.spoolUsedBytes)), () => undefined);
    }, 250);
    const segments = Math.ceil(perStreamBytes / segmentBytes);
    const cpu0 = cpuSecondsOf(child.process.pid as number);
    const start = performance.now();
    await Promise.all(
      disks.map(async (disk, d) => {
        const client = await ReplicationClient.connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          tls: { certPem: agent.certPem, keyPem: agent.keyPem, caPem: ca.caPem },
          machineId: MACHINE,
          disks: [{ disk, generation: 1 }],
        });
        const inFlight: Promise<unknown>[] = [];
        for (let seq = 1; seq <= segments; seq++) {
          const segment: OutgoingSegment = {
            disk,
            generation: 1,
            sequence: seq,
            flags: 0,
            diskSizeBytes: 1024 * 1024 * MiB,
            capturedAtMs: Date.now(),
            extents: [{ offset: (seq % 256) * segmentBytes, data: data[(seq + d) % data.length] as Buffer }],
          };
          inFlight.push(client.sendSegment(segment));
          if (inFlight.length >= 8) await inFlight.shift();
        }
        await Promise.all(inFlight);
        await client.close();
      }),
    );
    const ackedSec = (performance.now() - start) / 1000;
    clearInterval(poll);
    const stats = await child.ask<ProcessServerStats>('drain');
    const uploadedSec = (performance.now() - start) / 1000;
    const serverCpuPercent = (100 * (cpuSecondsOf(child.process.pid as number) - cpu0)) / uploadedSec;
    if (stats.uploadErrors > 0) throw new Error(`upload errors: ${stats.lastUploadError}`);
    let stored = 0;
    for (const disk of disks) for (const s of await listSegments(repo, disk)) stored += s.sizeBytes;
    const total = streams * segments * segmentBytes;
    if (stats.segmentsUploaded !== streams * segments) throw new Error(`${stats.segmentsUploaded} of ${streams * segments} segments uploaded`);
    spoolPeak = Math.max(spoolPeak, stats.spoolUsedBytes);
    return {
      streams,
      segmentMiB: segmentBytes / MiB,
      dataMB: total / 1e6,
      ackedMBps: total / 1e6 / ackedSec,
      uploadedMBps: total / 1e6 / uploadedSec,
      storedMB: stored / 1e6,
      spoolPeakMiB: spoolPeak / MiB,
      serverCpuPercent,
    };
  } finally {
    child.process.stdin!.end();
    child.process.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

export interface IngestOptions {
  /** Stream counts to measure, one run each (one TLS connection and one disk per stream). */
  readonly streams: readonly number[];
  readonly perStreamMiB: number;
  readonly segmentMiB: number;
  /** Seal worker threads of the process server (zstd + AES-GCM). */
  readonly workers: number;
}

/** The goal: 10 TB/day on 2 cores, rounded up to 120 MB/s (10^6 bytes). */
export const INGEST_GOAL_MBPS = 120;
const SECONDS_PER_DAY = 86_400;

export interface IngestReport {
  readonly options: IngestOptions;
  readonly machine: string;
  readonly zstdRatio: number;
  readonly rows: readonly Row[];
  readonly markdown: string;
}

/** TB/day (10^12 bytes) at a rate in MB/s. */
export function tbPerDay(mbPerSec: number): number {
  return (mbPerSec * 1e6 * SECONDS_PER_DAY) / 1e12;
}

export async function runIngest(options: IngestOptions, log: (msg: string) => void = (m) => console.error(m)): Promise<IngestReport> {
  const perStreamBytes = options.perStreamMiB * MiB;
  const segmentBytes = options.segmentMiB * MiB;
  const data = payloads(16, segmentBytes);
  const ratio = encode(data[0] as Buffer).payload.length / segmentBytes; // the store's codec and level
  const ca = await TestCa.create('bench CA');
  const loadAtStart = loadavg()[0] ?? 0;
  const rows: Row[] = [];
  for (const n of options.streams) {
    log(`ingest: ${n} streams of ${options.perStreamMiB} MiB`);
    rows.push(await run(n, perStreamBytes, segmentBytes, options.workers, ca, data));
  }
  const machine = `${cpus().length} cores, ${cpus()[0]?.model ?? '?'}, node ${process.version}`;
  const lines = [
    '## Process-server ingest',
    '',
    `- Machine: ${machine}; load average ${loadAtStart.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end`,
    `- Data: ${options.perStreamMiB} MiB per stream in ${options.segmentMiB} MiB segments, zstd ratio ${(ratio * 100).toFixed(0)} %, ${options.workers} seal workers (zstd + AES-256-GCM), fs store and spool on ${BENCH_DIR}; the agents' TLS runs in the bench process on the same 2 cores`,
    '',
    '| streams | segment | data MB | acked MB/s | uploaded MB/s | TB/day (uploaded) | × 120 MB/s goal | process server CPU % of one core | stored MB | spool peak MiB |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.streams} | ${r.segmentMiB} MiB | ${r.dataMB.toFixed(0)} | ${r.ackedMBps.toFixed(1)} | ${r.uploadedMBps.toFixed(1)} | ${tbPerDay(r.uploadedMBps).toFixed(1)} | ${(r.uploadedMBps / INGEST_GOAL_MBPS).toFixed(2)}× | ${r.serverCpuPercent.toFixed(0)} | ${r.storedMB.toFixed(0)} | ${r.spoolPeakMiB.toFixed(0)} |`,
    ),
    '',
  ];
  return { options, machine, zstdRatio: ratio, rows, markdown: lines.join('\n') };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      serve: { type: 'string' },
      streams: { type: 'string', default: '1,2,4' },
      mib: { type: 'string', default: '256' },
      'segment-mib': { type: 'string', default: '4' },
      workers: { type: 'string', default: '2' },
    },
  });
  if (values.serve) return serve(values.serve);
  const streams = values.streams.split(',').map(Number);
  const perStreamMiB = Number(values.mib);
  const segmentMiB = Number(values['segment-mib']);
  const workers = Number(values.workers);
  if (streams.some((n) => !Number.isInteger(n) || n < 1) || !(perStreamMiB > 0) || !(segmentMiB > 0 && segmentMiB <= 16) || !(workers >= 1)) {
    throw new Error('usage: node --import tsx bench/ingest.ts [--streams 1,2,4] [--mib 256] [--segment-mib 4] [--workers 2]');
  }
  process.stdout.write((await runIngest({ streams, perStreamMiB, segmentMiB, workers })).markdown);
}

// Imported by bench/run.ts (--ingest), run directly as the process-server child or on its own.
if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
