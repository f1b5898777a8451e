/**
 * Recovery benchmark (`npm run -s bench -- --recovery`, docs/benchmarks.md, "Recovery"):
 *
 * 1. Time from `test-failover start` to the guest's boot marker for disks of several
 *    sizes (goal: flat in disk size, at most RTO_GOAL_S). Per size, a fresh all-in-one
 *    vault (src/cli/quickstart/all-in-one.ts AllInOne: the vault with the qemu compute
 *    driver, the built-in process server and the agent, all in this process, SQLite
 *    and a local-folder store) protects a bootable tiny guest disk
 *    (test/helpers/guest.ts) grown sparse to the size, with 1 MiB of random data
 *    written in the middle of every GiB so the store really holds a large disk. Then
 *    POST test-failover at the newest processed point: the drill report's RTO (job
 *    start → boot marker) and this process's own wall clock from the request to the
 *    marker line on the console; then the cleanup.
 * 2. Bytes shipped by failback after a 1 % change on the replica: failover, commit,
 *    reprotect, then the running replica's guest writes 1 % of its disk as distinct
 *    4 KiB blocks of random data spread over the disk past its partition (busybox dd
 *    through the guest shell on the serial console, the compute driver's runInGuest),
 *    then failback; the bytes reverse replication shipped from the change to the end of
 *    failback (GET /api/v1/items/:id/reverse) against the change and the disk size.
 *
 * The guest keeps a root shell on its console after the marker (test/helpers/guest.ts
 * `shell`), so a machine keeps running until it is stopped, as a real one does.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentEvent } from '../src/agent/agent.js';
import { AllInOne } from '../src/cli/quickstart/all-in-one.js';
import type { MachineStatus } from '../src/compute/driver.js';
import { isLifeboatError, LifeboatError } from '../src/core/errors.js';
import type { DrillReport, Job } from '../src/core/model.js';
import { createVaultLogger } from '../src/vault/logging/logger.js';
import { requireTool } from '../test/helpers/env.js';
import { buildGuestImage, type GuestImage } from '../test/helpers/guest.js';
import { BENCH_DIR } from './paths.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** The goal: a test failover boots to its marker within this, whatever the disk size. */
export const RTO_GOAL_S = 30;
/** How long a drill may take to reach its marker before the bench gives up on it. */
const BOOT_TIMEOUT_S = 600;
const BLOCK_BYTES = 4096;

export interface RecoveryOptions {
  /** Disk sizes of the boot-time runs, GiB. */
  readonly sizesGiB: readonly number[];
  /** Disk size of the failback run, GiB; 0 skips it. */
  readonly failbackGiB: number;
  /** Share of the failback disk changed on the replica, percent. */
  readonly changePercent: number;
  /** The policy's crash-consistent cut interval while the drills run. */
  readonly cutEverySeconds: number;
  /** Test failovers per size, one after the other on the same protected disk. */
  readonly drillsPerSize: number;
}

export const RECOVERY_DEFAULTS: RecoveryOptions = Object.freeze({
  sizesGiB: Object.freeze([1, 8, 32]),
  failbackGiB: 8,
  changePercent: 1,
  cutEverySeconds: 10,
  drillsPerSize: 1,
});

/** One test failover of a size. */
export interface Drill {
  readonly outcome: DrillReport['outcome'];
  readonly error: string | null;
  /** The drill report: job start → boot marker. */
  readonly reportRtoS: number | null;
  /** This process: POST test-failover → the marker line seen on the console. */
  readonly wallToMarkerS: number | null;
  readonly accel: 'kvm' | 'tcg' | null;
  /** How much of the disk the background copy had made local when the marker was seen. */
  readonly copyPercentAtMarker: number | null;
  /** The test failover job's steps and how long each took. */
  readonly steps: readonly { readonly name: string; readonly seconds: number | null }[];
  /** POST cleanup → its job ended. */
  readonly cleanupS: number;
}

/** One disk size: its initial replication, and the median of its drills (by wall clock) with every drill beside it. */
export interface SizeResult extends Drill {
  readonly sizeGiB: number;
  /** Bytes allocated in the sparse image (the guest's partition and the data written across it). */
  readonly allocatedBytes: number;
  /** Agent start → item protected (first point made). */
  readonly initialReplicationS: number;
  /** Data bytes of the cuts the agent committed until then. */
  readonly initialShippedBytes: number;
  /** Fastest and slowest wall clock over the drills (null when one saw no marker). */
  readonly wallToMarkerRangeS: readonly [number, number] | null;
  readonly drills: readonly Drill[];
}

export type FailbackResult =
  | {
      readonly available: true;
      readonly diskGiB: number;
      readonly changedBlocks: number;
      readonly changedBytes: number;
      /** Reverse replication from the change to the end of failback: the continuous cuts after reprotect plus the failback job. */
      readonly shippedBytes: number;
      /** Of which the failback job itself (its last cut and digest check). */
      readonly failbackJobBytes: number;
      /** What the reprotect job had shipped when it ended: its first synchronization (the blocks that differed after the failover). */
      readonly reprotectBytes: number;
      readonly failoverS: number;
      readonly reprotectS: number;
      readonly failbackS: number;
    }
  /** Not measured: the build lacks reverse replication (its routes answer NOT_FOUND or UNSUPPORTED), or a step failed (`failed`). */
  | {
      readonly available: false;
      readonly diskGiB: number;
      readonly failed: boolean;
      readonly reason: string;
      /** When a step after the change failed: the change, and what reverse replication had shipped since it by then. */
      readonly partial?: { readonly changedBytes: number; readonly shippedBytes: number; readonly reprotectBytes: number };
    };

export interface RecoveryReport {
  readonly commandLine: string;
  readonly startedAt: string;
  readonly machine: string;
  /** `uptime` when the run started and when it ended: other work on the box skews wall times. */
  readonly uptimeAtStart: string;
  readonly uptimeAtEnd: string;
  readonly loadAtStart: number;
  readonly loadAtEnd: number;
  readonly options: RecoveryOptions;
  readonly guest: { readonly kernelRelease: string; readonly partitionBytes: number; readonly marker: string };
  readonly sizes: readonly SizeResult[];
  readonly failback: FailbackResult | null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function uptime(): string {
  return execFileSync('uptime', { encoding: 'utf8' }).trim();
}

/** Bytes the filesystem allocated to a (sparse) file. */
function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

/**
 * The guest's disk grown sparse to `sizeGiB`, with 1 MiB of random data in the
 * middle of every GiB (past the guest's partition, which stays as built).
 */
function growImage(guest: GuestImage, path: string, sizeGiB: number): void {
  execFileSync('cp', ['--sparse=always', guest.imagePath, path]);
  truncateSync(path, sizeGiB * GiB);
  const fd = openSync(path, 'r+');
  try {
    for (let g = 0; g < sizeGiB; g++) writeSync(fd, randomBytes(MiB), 0, MiB, g * GiB + GiB / 2);
  } finally {
    closeSync(fd);
  }
}

/** Marker lines: the guest's whole expected line, as a regular expression. */
function markerPattern(guest: GuestImage): string {
  return `^${guest.expectedLine.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`;
}

/** The one machine an all-in-one vault's compute driver holds, once it exists. */
async function onlyMachine(all: AllInOne, timeoutMs: number): Promise<MachineStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [m] = await all.server.compute.list();
    if (m) return m;
    if (Date.now() > deadline) throw new LifeboatError('TIMEOUT', 'the compute driver made no machine');
    await sleep(50);
  }
}

async function drillSettings(all: AllInOne, itemId: string, bootMarker: string): Promise<void> {
  await all.api.request('PUT', `/api/v1/items/${itemId}/drill-settings`, { probes: [], bootMarker, bootTimeoutSeconds: BOOT_TIMEOUT_S, scheduleEveryHours: null });
}

function cutBytes(events: readonly { event: string; bytes?: number }[]): number {
  return events.reduce((n, e) => n + (e.event === 'cut-committed' ? (e.bytes ?? 0) : 0), 0);
}

/** One test failover to the marker and its cleanup. */
async function drillOnce(all: AllInOne, itemId: string, pattern: string, label: string, log: (m: string) => void): Promise<Drill> {
  const requested = performance.now();
  const started = await all.api.post<Job>(`/api/v1/items/${itemId}/test-failover`, { point: { kind: 'latest-processed' } });
  let wallToMarkerS: number | null = null;
  let copyPercentAtMarker: number | null = null;
  try {
    const machine = await onlyMachine(all, BOOT_TIMEOUT_S * 1000);
    await all.server.compute.waitForConsole(machine.id, new RegExp(pattern, 'm'), { timeoutMs: BOOT_TIMEOUT_S * 1000 });
    wallToMarkerS = (performance.now() - requested) / 1000;
    copyPercentAtMarker = (await all.server.compute.status(machine.id)).copyPercent;
  } catch (err) {
    log(`recovery: ${label}: no marker seen: ${(err as Error).message}`);
  }
  // The job ends once the report's checks (the boot marker) are done.
  const job = await all.waitForJob(started.id);
  const report = await all.reportOf(itemId, job.id);
  log(`recovery: ${label}: drill ${report.outcome}, report RTO ${report.rtoSeconds ?? '-'} s, marker after ${wallToMarkerS?.toFixed(1) ?? '-'} s`);
  const c0 = performance.now();
  await all.cleanupTestFailover(itemId, report.id, `bench ${label}`);
  return {
    outcome: report.outcome,
    error: report.error ?? (job.state === 'succeeded' ? null : `job ${job.state}: ${job.error ?? ''}`),
    reportRtoS: report.rtoSeconds,
    wallToMarkerS,
    accel: report.accel,
    copyPercentAtMarker,
    steps: job.steps.map((st) => ({ name: st.name, seconds: st.startedAt && st.endedAt ? (Date.parse(st.endedAt) - Date.parse(st.startedAt)) / 1000 : null })),
    cleanupS: (performance.now() - c0) / 1000,
  };
}

/** One disk size on a fresh vault: protect, test failover to the marker, cleanup. */
async function runSize(guest: GuestImage, sizeGiB: number, options: RecoveryOptions, log: (m: string) => void): Promise<SizeResult> {
  // Unix socket paths (the driver's QMP, console, NBD) are limited to 107 bytes: a short directory.
  const dir = mkdtempSync(join(tmpdir(), 'lb-rec-'));
  const image = join(dir, 'disk.img');
  growImage(guest, image, sizeGiB);
  const all = await AllInOne.start({ dir: join(dir, 'aio'), compute: 'qemu', logger: createVaultLogger({ level: 'warn' }), cutEverySeconds: options.cutEverySeconds });
  try {
    const t0 = performance.now();
    const disk = await all.protect(`bench-${sizeGiB}g`, image, { timeoutMs: 1_800_000 });
    const initialReplicationS = (performance.now() - t0) / 1000;
    const initialShippedBytes = cutBytes(disk.events);
    log(`recovery: ${sizeGiB} GiB protected in ${initialReplicationS.toFixed(1)} s (${(initialShippedBytes / MiB).toFixed(1)} MiB shipped)`);
    const pattern = markerPattern(guest);
    await drillSettings(all, disk.itemId, pattern);

    const drills: Drill[] = [];
    for (let n = 1; n <= options.drillsPerSize; n++) drills.push(await drillOnce(all, disk.itemId, pattern, `${sizeGiB} GiB, drill ${n}/${options.drillsPerSize}`, log));
    // The figures of the median drill (by wall clock; a drill without a marker sorts last).
    const byWall = [...drills].sort((a, b) => (a.wallToMarkerS ?? Infinity) - (b.wallToMarkerS ?? Infinity));
    const median = byWall[Math.floor((byWall.length - 1) / 2)] as Drill;
    const walls = drills.flatMap((d) => (d.wallToMarkerS === null ? [] : [d.wallToMarkerS]));
    const failed = drills.find((d) => d.outcome !== 'passed');
    return {
      sizeGiB,
      allocatedBytes: allocatedBytes(image),
      initialReplicationS,
      initialShippedBytes,
      ...median,
      outcome: failed ? failed.outcome : median.outcome,
      error: failed ? failed.error : null,
      wallToMarkerRangeS: walls.length === drills.length ? [Math.min(...walls), Math.max(...walls)] : null,
      drills,
    };
  } finally {
    await all.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The replica's guest writes `percent` of its disk as distinct 4 KiB blocks of random
 * data past the partition: the i-th goes to x = (i · 1000003 + seed) mod 2^k (2^k the
 * largest power of two within the blocks there; an odd stride, so every x differs),
 * scaled by blocks / 2^k (at least 1, so they still differ) to reach the whole disk.
 * Returns the number of blocks written.
 */
async function writeChangeInGuest(all: AllInOne, machineId: string, diskBytes: number, percent: number, partitionEndBytes: number): Promise<number> {
  const first = Math.ceil(partitionEndBytes / BLOCK_BYTES);
  const blocks = diskBytes / BLOCK_BYTES - first;
  const span = 2 ** Math.floor(Math.log2(blocks));
  const count = Math.round((diskBytes / BLOCK_BYTES) * (percent / 100));
  const seed = randomBytes(4).readUInt32BE(0) % span;
  const block = `${first} + ((i * 1000003 + ${seed}) % ${span}) * ${blocks} / ${span}`;
  const script =
    `i=0; while [ $i -lt ${count} ]; do ` +
    `dd if=/dev/urandom of=/dev/nvme0n1 bs=4096 count=1 seek=$(( ${block} )) conv=notrunc 2>/dev/null || { echo dd failed; break; }; ` +
    `i=$((i + 1)); done; sync; echo wrote $i`;
  const r = await all.server.compute.runInGuest(machineId, script, { timeoutMs: 3_600_000 });
  if (r.exitCode !== 0 || !r.output.includes(`wrote ${count}`)) throw new LifeboatError('COMPUTE_FAILED', `the guest's writes failed (exit ${r.exitCode}): ${r.output.slice(-500)}`);
  return count;
}

/** GET /api/v1/items/:id/reverse: what reverse replication shipped to the primary machine's agent, in all and per job. */
interface ReverseStatus {
  readonly bytesShipped: number;
  readonly blocksShipped: number;
  readonly jobs: Readonly<Record<string, { readonly bytes: number; readonly blocks: number }>>;
}

/** Failover, commit, reprotect, a `percent` change on the replica, failback: what failback shipped. */
async function runFailback(guest: GuestImage, options: RecoveryOptions, log: (m: string) => void): Promise<FailbackResult> {
  const diskGiB = options.failbackGiB;
  const dir = mkdtempSync(join(tmpdir(), 'lb-rec-'));
  const image = join(dir, 'disk.img');
  growImage(guest, image, diskGiB);
  const all = await AllInOne.start({ dir: join(dir, 'aio'), compute: 'qemu', logger: createVaultLogger({ level: 'warn' }), cutEverySeconds: options.cutEverySeconds });
  const step = async (what: string, path: string, body: unknown): Promise<{ job: Job; seconds: number }> => {
    const t0 = performance.now();
    const started = await all.api.post<Job>(path, body);
    const job = await all.waitForJob(started.id, 1_800_000);
    if (job.state !== 'succeeded') throw new LifeboatError('COMPUTE_FAILED', `${what} ${job.state}: ${job.error ?? 'no error recorded'}`);
    const seconds = (performance.now() - t0) / 1000;
    log(`recovery: ${what} done in ${seconds.toFixed(1)} s`);
    return { job, seconds };
  };
  let partial: { itemId: string; changedBytes: number; before: ReverseStatus; reprotectJobId: string } | undefined;
  try {
    // The agent's side of reverse replication, in the progress log.
    const onEvent = (e: AgentEvent): void => {
      if (e.event.startsWith('reverse') || e.event === 'disk-error' || e.event === 'config') log(`recovery: agent: ${JSON.stringify(e)}`);
    };
    const disk = await all.protect(`failback-${diskGiB}g`, image, { timeoutMs: 1_800_000, onEvent });
    await drillSettings(all, disk.itemId, markerPattern(guest));
    const failover = await step('failover', `/api/v1/items/${disk.itemId}/failover`, { point: { kind: 'latest-processed' }, shutdownSource: false });
    await step('commit', `/api/v1/items/${disk.itemId}/commit`, {});
    const reprotect = await step('reprotect', `/api/v1/items/${disk.itemId}/reprotect`, {});
    const machine = await onlyMachine(all, 60_000);
    const before = await all.api.get<ReverseStatus>(`/api/v1/items/${disk.itemId}/reverse`);
    const w0 = performance.now();
    const changedBlocks = await writeChangeInGuest(all, machine.id, diskGiB * GiB, options.changePercent, guest.partition.startBytes + guest.partition.sizeBytes);
    log(`recovery: the replica's guest wrote ${changedBlocks} random 4 KiB blocks in ${((performance.now() - w0) / 1000).toFixed(0)} s`);
    partial = { itemId: disk.itemId, changedBytes: changedBlocks * BLOCK_BYTES, before, reprotectJobId: reprotect.job.id };
    const failback = await step('failback', `/api/v1/items/${disk.itemId}/failback`, {});
    const after = await all.api.get<ReverseStatus>(`/api/v1/items/${disk.itemId}/reverse`);
    return {
      available: true,
      diskGiB,
      changedBlocks,
      changedBytes: changedBlocks * BLOCK_BYTES,
      shippedBytes: after.bytesShipped - before.bytesShipped,
      failbackJobBytes: after.jobs[failback.job.id]?.bytes ?? 0,
      reprotectBytes: before.jobs[reprotect.job.id]?.bytes ?? 0,
      failoverS: failover.seconds,
      reprotectS: reprotect.seconds,
      failbackS: failback.seconds,
    };
  } catch (err) {
    // A build without reverse replication answers its routes with NOT_FOUND or UNSUPPORTED;
    // any other failure is reported as one, after the boot-time figures it does not spoil.
    const missing = isLifeboatError(err, 'NOT_FOUND') || isLifeboatError(err, 'UNSUPPORTED');
    log(`recovery: failback part ${missing ? 'not available' : 'failed'}: ${(err as Error).message}`);
    let shippedSoFar: NonNullable<Extract<FailbackResult, { available: false }>['partial']> | undefined;
    // The partial figures are a bonus: a status that cannot be read leaves them out, the failure stands.
    const now = partial && (await all.api.get<ReverseStatus>(`/api/v1/items/${partial.itemId}/reverse`).catch(() => undefined));
    if (partial && now) {
      shippedSoFar = { changedBytes: partial.changedBytes, shippedBytes: now.bytesShipped - partial.before.bytesShipped, reprotectBytes: partial.before.jobs[partial.reprotectJobId]?.bytes ?? 0 };
    }
    return { available: false, diskGiB, failed: !missing, reason: (err as Error).message, ...(shippedSoFar ? { partial: shippedSoFar } : {}) };
  } finally {
    await all.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runRecovery(options: RecoveryOptions, commandLine: string, log: (m: string) => void): Promise<RecoveryReport> {
  requireTool('qemu-system-x86_64', 'qemu-system-x86');
  requireTool('qemu-img', 'qemu-utils');
  const startedAt = new Date().toISOString();
  const uptimeAtStart = uptime();
  const loadAtStart = loadavg()[0] ?? 0;
  log('recovery: building the guest image (cached after the first build)');
  const guest = await buildGuestImage({ dir: join(BENCH_DIR, 'recovery-guest'), shell: true });
  const sizes: SizeResult[] = [];
  for (const sizeGiB of options.sizesGiB) sizes.push(await runSize(guest, sizeGiB, options, log));
  const failback = options.failbackGiB > 0 ? await runFailback(guest, options, log) : null;
  return {
    commandLine,
    startedAt,
    machine: `${cpus()[0]?.model ?? 'unknown CPU'}, nproc ${availableParallelism()}, node ${process.version}, ${execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0]}`,
    uptimeAtStart,
    uptimeAtEnd: uptime(),
    loadAtStart,
    loadAtEnd: loadavg()[0] ?? 0,
    options,
    guest: { kernelRelease: guest.kernelRelease, partitionBytes: guest.partition.sizeBytes, marker: guest.expectedLine },
    sizes,
    failback,
  };
}

const f1 = (n: number | null): string => (n === null ? '–' : n.toFixed(1));

export function renderRecovery(r: RecoveryReport): string {
  const out: string[] = [];
  out.push('## Recovery', '');
  out.push(`- Command: \`${r.commandLine}\``);
  out.push(`- Started: ${r.startedAt}; machine: ${r.machine}`);
  out.push(`- Load: \`${r.uptimeAtStart}\` at start, \`${r.uptimeAtEnd}\` at end`);
  out.push(
    `- Guest: Debian's cloud kernel ${r.guest.kernelRelease} and busybox on a ${(r.guest.partitionBytes / MiB).toFixed(0)} MiB partition, the disk grown sparse to each size with 1 MiB of random data in the middle of every GiB; boot marker \`${r.guest.marker}\``,
  );
  out.push(`- Per size a fresh all-in-one vault (qemu compute driver, SQLite, local-folder store), the agent's scan tracker on the image, a cut every ${r.options.cutEverySeconds} s; ${r.options.drillsPerSize} test failover${r.options.drillsPerSize > 1 ? 's (the median by wall clock, [fastest–slowest])' : ''} per size`);
  out.push('- Initial replication ships only what the sparse image has allocated (holes are not read), so it grows with the data, not with the disk size');
  const stepNames = r.sizes[0]?.steps.map((st) => st.name.replace(/^Prerequisites check.*/, 'prerequisites').toLowerCase()) ?? [];
  if (stepNames.length > 0) out.push(`- Job steps: ${stepNames.join(' / ')} (the last one waits for the boot marker)`);
  out.push('');
  const base = r.sizes.find((s) => s.sizeGiB === 1) ?? r.sizes[0];
  const baseS = base?.wallToMarkerS ?? null;
  out.push('| disk | allocated | initial replication s (shipped MiB) | test-failover → marker s (report) | (wall clock) | ratio to the first size | job steps s | copied at marker | accel | outcome | cleanup s |');
  out.push('| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | ---: |');
  for (const s of r.sizes) {
    const ratio = baseS !== null && s.wallToMarkerS !== null ? `${(s.wallToMarkerS / baseS).toFixed(2)}×` : '–';
    out.push(
      `| ${s.sizeGiB} GiB | ${(s.allocatedBytes / MiB).toFixed(0)} MiB | ${f1(s.initialReplicationS)} (${(s.initialShippedBytes / MiB).toFixed(1)}) | ${s.reportRtoS ?? '–'} | ${f1(s.wallToMarkerS)}${s.drills.length > 1 && s.wallToMarkerRangeS ? ` [${f1(s.wallToMarkerRangeS[0])}–${f1(s.wallToMarkerRangeS[1])}]` : ''} | ${ratio} | ${s.steps.map((st) => f1(st.seconds)).join(' / ')} | ${s.copyPercentAtMarker === null ? '–' : `${s.copyPercentAtMarker.toFixed(0)} %`} | ${s.accel ?? '–'} | ${s.outcome}${s.error ? ` (${s.error})` : ''} | ${f1(s.cleanupS)} |`,
    );
  }
  out.push('');
  // The goal holds for every drill, not only the medians.
  const worst = Math.max(...r.sizes.flatMap((s) => s.drills.map((d) => d.wallToMarkerS ?? Number.POSITIVE_INFINITY)));
  out.push('| goal | measured | result |');
  out.push('| --- | ---: | --- |');
  out.push(`| test failover → boot marker ≤ ${RTO_GOAL_S} s at every size | ${Number.isFinite(worst) ? `${worst.toFixed(1)} s (slowest drill)` : 'a drill reached no marker'} | ${worst <= RTO_GOAL_S ? '**met**' : '**missed**'} |`);
  out.push('');
  const fb = r.failback;
  if (fb === null) out.push('Failback: not run (--recovery-failback-size 0).');
  else if (!fb.available) {
    out.push(`Failback after a ${r.options.changePercent} % change on a ${fb.diskGiB} GiB disk: ${fb.failed ? 'FAILED' : 'not available'}: ${fb.reason}`);
    const p = fb.partial;
    if (p) {
      out.push(
        '',
        `Until it failed, reverse replication had shipped ${(p.shippedBytes / MiB).toFixed(1)} MiB since the change of ${(p.changedBytes / MiB).toFixed(1)} MiB (${(p.shippedBytes / p.changedBytes).toFixed(2)}×, ${((100 * p.shippedBytes) / (fb.diskGiB * GiB)).toFixed(2)} % of the disk); reprotect's first sync had shipped ${(p.reprotectBytes / MiB).toFixed(1)} MiB.`,
      );
    }
  }
  else {
    out.push(`Failback after a ${r.options.changePercent} % change on a ${fb.diskGiB} GiB disk (${fb.changedBlocks} distinct 4 KiB blocks of random data written by the running replica's guest, busybox dd through its console shell):`, '');
    out.push('| changed | shipped, change → failback done | of which the failback job | shipped / changed | shipped / disk | reprotect shipped | failover s | reprotect s | failback s |');
    out.push('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    out.push(
      `| ${(fb.changedBytes / MiB).toFixed(1)} MiB | ${(fb.shippedBytes / MiB).toFixed(1)} MiB | ${(fb.failbackJobBytes / MiB).toFixed(1)} MiB | ${(fb.shippedBytes / fb.changedBytes).toFixed(2)}× | ${((100 * fb.shippedBytes) / (fb.diskGiB * GiB)).toFixed(2)} % | ${(fb.reprotectBytes / MiB).toFixed(1)} MiB | ${f1(fb.failoverS)} | ${f1(fb.reprotectS)} | ${f1(fb.failbackS)} |`,
    );
  }
  out.push('');
  return out.join('\n');
}
