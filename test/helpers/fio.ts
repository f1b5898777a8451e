import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool } from './env.js';

/**
 * A background write load from Debian's fio, for replication tests and benchmarks:
 * random writes of 4–64 KiB blocks at a fixed rate into a file or an NBD export, for a
 * fixed time or until stop(). The JSON report fio prints at the end is parsed into
 * FioResult. fio is a test dependency (scripts/install-test-deps.sh); a missing fio
 * fails the test naming the package.
 */
export type FioTarget =
  /** A regular file (created if missing); fio writes at random offsets below sizeBytes. */
  | { readonly file: string; readonly sizeBytes: number }
  /** An NBD export, e.g. `nbd+unix:///export?socket=/path/nbd.sock` (fio's nbd engine, libnbd). */
  | { readonly nbdUri: string; readonly sizeBytes?: number };

export interface FioOptions {
  readonly target: FioTarget;
  /** Write rate in MB/s (10^6 bytes); fio throttles to it. */
  readonly rateMBPerSec: number;
  /** Run time; without it fio runs until stop(). */
  readonly durationMs?: number;
  /**
   * fio bssplit: block size / percentage pairs. The default mixes 4 KiB to 64 KiB,
   * all multiples of 4 KiB, so offsets stay 4 KiB-aligned.
   */
  readonly blockSizeSplit?: string;
  /** O_DIRECT (files only); check with supportsDirectIo() first, tmpfs refuses it. */
  readonly direct?: boolean;
  /** fsync after every N writes (NBD: a flush). */
  readonly fsyncEveryWrites?: number;
  /** fdatasync after every N writes (NBD: a flush). */
  readonly fdatasyncEveryWrites?: number;
  /** Writes in flight; only asynchronous engines (nbd) use more than 1. */
  readonly ioDepth?: number;
  /** Seed of fio's offset and block-size generator, for repeatable runs. */
  readonly seed?: number;
}

export interface FioLatencyUs {
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export interface FioResult {
  readonly bytesWritten: number;
  readonly writes: number;
  readonly writeIops: number;
  readonly bandwidthBytesPerSec: number;
  readonly runtimeMs: number;
  /** Completion latency of the writes. */
  readonly writeLatencyUs: FioLatencyUs;
  /** Latency of the fsync/fdatasync calls, when any were made. */
  readonly syncLatencyUs?: FioLatencyUs;
  /** fio's own JSON report, for anything not mapped above. */
  readonly raw: unknown;
}

export interface FioRun {
  /** The fio process (its pid is fio's own). */
  readonly child: ChildProcess;
  /** Settles when fio exits: its parsed report, or an error with fio's stderr. */
  readonly done: Promise<FioResult>;
  /** Sends SIGINT (fio then finishes the job and prints its report) and waits for the result. */
  stop(): Promise<FioResult>;
}

export const DEFAULT_BLOCK_SIZE_SPLIT = '4k/40:8k/20:16k/20:32k/10:64k/10';
const STOP_TIMEOUT_MS = 15_000;
/** "Until stopped" is a time-based run longer than any test. */
const FOREVER_MS = 24 * 3600 * 1000;

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Builds fio's command line; exported so a benchmark can print what it ran. */
export function fioArgs(options: FioOptions): string[] {
  const { target } = options;
  if (!(options.rateMBPerSec > 0)) throw new Error(`fio rate must be positive, got ${options.rateMBPerSec} MB/s`);
  const args = [
    '--name=lifeboat-load',
    '--rw=randwrite',
    `--bssplit=${options.blockSizeSplit ?? DEFAULT_BLOCK_SIZE_SPLIT}`,
    '--blockalign=4k',
    '--norandommap',
    `--rate=${Math.round(options.rateMBPerSec * 1_000_000)}`,
    '--time_based',
    `--runtime=${Math.max(1, Math.round(options.durationMs ?? FOREVER_MS))}ms`,
    '--output-format=json',
  ];
  if ('file' in target) {
    // fio splits --filename at colons unless they are escaped.
    args.push('--ioengine=psync', `--filename=${target.file.replaceAll(':', '\\:')}`, `--size=${target.sizeBytes}`);
  } else {
    if (options.direct) throw new Error('fio direct=1 applies to files only, not to an NBD export');
    args.push('--ioengine=nbd', `--uri=${target.nbdUri}`);
    if (target.sizeBytes !== undefined) args.push(`--size=${target.sizeBytes}`);
  }
  if (options.direct) args.push('--direct=1');
  if (options.fsyncEveryWrites !== undefined) args.push(`--fsync=${options.fsyncEveryWrites}`);
  if (options.fdatasyncEveryWrites !== undefined) args.push(`--fdatasync=${options.fdatasyncEveryWrites}`);
  if (options.ioDepth !== undefined) args.push(`--iodepth=${options.ioDepth}`);
  if (options.seed !== undefined) args.push(`--randseed=${options.seed}`);
  return args;
}

export function startFio(options: FioOptions): FioRun {
  const fio = requireTool('fio', 'fio');
  const args = fioArgs(options);
  const child = spawn(fio, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-8000)));
  let interrupted = false;

  const done = new Promise<FioResult>((resolve, reject) => {
    child.once('error', (err) => {
      live.delete(child);
      reject(new Error(`could not run fio: ${err.message}`, { cause: err }));
    });
    child.once('close', (code, signal) => {
      live.delete(child);
      const describe = `fio ${args.join(' ')} (exit ${code ?? signal})`;
      // After SIGINT fio still prints its report but exits non-zero: the report decides.
      if (code !== 0 && !interrupted) {
        reject(new Error(`${describe} failed: ${stderr.trim() || stdout.trim() || '(no output)'}`));
        return;
      }
      try {
        resolve(parseFioReport(stdout));
      } catch (err) {
        reject(new Error(`${describe}: ${message(err)}; stderr: ${stderr.trim() || '(empty)'}`, { cause: err }));
      }
    });
  });
  // A caller that only ever calls stop() must not see an unhandled rejection from done.
  done.catch(() => undefined);

  return {
    child,
    done,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        interrupted = true;
        child.kill('SIGINT');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        try {
          return await done;
        } finally {
          clearTimeout(timer);
        }
      }
      return done;
    },
  };
}

/**
 * Parses the report of `fio --output-format=json` (one job). fio writes notices such as
 * "fio: terminating on signal 2" to the same stream before the JSON, so parsing starts at
 * the first line that opens an object.
 */
export function parseFioReport(output: string): FioResult {
  const start = output.search(/^\{/m);
  if (start < 0) throw new Error(`no JSON report in fio's output: ${output.slice(0, 500) || '(empty)'}`);
  const raw = JSON.parse(output.slice(start)) as FioJson;
  const job = raw.jobs?.[0];
  if (!job?.write) throw new Error('fio report has no job with write statistics');
  if (job.error) throw new Error(`fio job failed with error ${job.error}`);
  const w = job.write;
  const syncLatency = job.sync?.lat_ns;
  return {
    bytesWritten: w.io_bytes,
    writes: w.total_ios,
    writeIops: w.iops,
    bandwidthBytesPerSec: w.bw_bytes,
    runtimeMs: w.runtime,
    writeLatencyUs: latency(w.clat_ns),
    ...(syncLatency && syncLatency.N > 0 ? { syncLatencyUs: latency(syncLatency) } : {}),
    raw,
  };
}

/**
 * Whether files in `dir` can be opened with O_DIRECT (tmpfs and some overlay setups
 * cannot), probed with a scratch file that is removed again.
 */
export function supportsDirectIo(dir: string): boolean {
  const probe = join(dir, `.direct-io-probe-${process.pid}`);
  try {
    closeSync(openSync(probe, constants.O_CREAT | constants.O_RDWR | constants.O_DIRECT, 0o600));
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { force: true });
  }
}

interface FioLatencyJson {
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  readonly N: number;
  readonly percentile?: Readonly<Record<string, number>>;
}

interface FioJson {
  readonly jobs?: readonly {
    readonly error?: number;
    readonly write?: {
      readonly io_bytes: number;
      readonly total_ios: number;
      readonly iops: number;
      readonly bw_bytes: number;
      readonly runtime: number;
      readonly clat_ns: FioLatencyJson;
    };
    readonly sync?: { readonly lat_ns?: FioLatencyJson };
  }[];
}

function latency(ns: FioLatencyJson): FioLatencyUs {
  const pct = (p: string): number => (ns.percentile?.[p] ?? Number.NaN) / 1000;
  return {
    mean: ns.mean / 1000,
    p50: pct('50.000000'),
    p90: pct('90.000000'),
    p99: pct('99.000000'),
    p999: pct('99.900000'),
    max: ns.max / 1000,
  };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
