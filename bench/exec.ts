import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A step of the benchmark that failed; the message is what the report prints. */
export class StepError extends Error {
  override readonly name = 'StepError';
}

export interface RunOptions {
  readonly cwd?: string;
  /** Added to the inherited environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Where the child's stdout goes: captured (default) or /dev/null. */
  readonly stdout?: 'capture' | 'null';
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface TimedResult extends RunResult {
  /** Wall-clock seconds as measured by GNU time (%e). */
  readonly wallS: number;
  /** Peak resident set size in KiB as measured by GNU time (%M). */
  readonly peakRssKiB: number;
}

const TIME = '/usr/bin/time';

/** Runs a command to completion; a non-zero exit becomes a StepError carrying the stderr tail. */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const devNull = opts.stdout === 'null' ? openSync('/dev/null', 'w') : undefined;
  try {
    return await new Promise<RunResult>((resolve, reject) => {
      const child = spawn(cmd, args, {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        stdio: ['ignore', devNull ?? 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on('data', (b: Buffer) => out.push(b));
      child.stderr?.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e) => reject(new StepError(`cannot start ${cmd}: ${e.message}`)));
      child.on('close', (code, signal) => {
        const stdout = Buffer.concat(out).toString('utf8');
        const stderr = Buffer.concat(err).toString('utf8');
        if (code === 0) return resolve({ stdout, stderr });
        const why = signal ? `killed by ${signal}` : `exit ${code}`;
        reject(new StepError(`${[cmd, ...args].join(' ')}: ${why}: ${tail(stderr || stdout)}`));
      });
    });
  } finally {
    if (devNull !== undefined) closeSync(devNull);
  }
}

/** Runs a command under `/usr/bin/time -f '%e %M'` and returns its wall time and peak RSS. */
export async function timed(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<TimedResult> {
  const dir = mkdtempSync(join(tmpdir(), 'lifeboat-bench-time-'));
  const timeFile = join(dir, 'time');
  try {
    const res = await run(TIME, ['-f', '%e %M', '-o', timeFile, cmd, ...args], opts);
    // GNU time writes "Command exited with non-zero status N" first on failure; the figures are the last line.
    const last = readFileSync(timeFile, 'utf8').trim().split('\n').at(-1) ?? '';
    const m = /^([\d.]+) (\d+)$/.exec(last);
    if (!m) throw new StepError(`cannot parse /usr/bin/time output "${last}"`);
    return { ...res, wallS: Number(m[1]), peakRssKiB: Number(m[2]) };
  } catch (e) {
    if (e instanceof StepError) e.message = e.message.replace(/^\/usr\/bin\/time -f %e %M -o \S+ /, '');
    throw e;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Last non-empty lines of a tool's output, on one line, for error messages. */
export function tail(text: string, lines = 3): string {
  const kept = text.trim().split('\n').filter((l) => l.trim() !== '').slice(-lines);
  return kept.length ? kept.join(' | ').slice(0, 500) : '(no output)';
}

/** Apparent size of everything under a path, in bytes (`du -sb`). */
export function duBytes(path: string): number {
  const out = execFileSync('du', ['-sb', path], { encoding: 'utf8' });
  return Number(out.split('\t')[0]);
}

/** Bytes actually allocated on disk (`du -sB1`), to show sparseness. */
export function allocatedBytes(path: string): number {
  const out = execFileSync('du', ['-sB1', path], { encoding: 'utf8' });
  return Number(out.split('\t')[0]);
}

/** Copies a disk image keeping holes (reflink where the filesystem can), then flushes it to disk. */
export function copySparse(from: string, to: string): void {
  execFileSync('cp', ['--sparse=always', '--reflink=auto', from, to]);
  execFileSync('sync', [to]);
}

/** Flushes dirty pages system-wide so the writeback of one step does not slow the next. */
export function syncAll(): void {
  execFileSync('sync');
}

/** Reads a file once so the page cache holds it (the runs are measured warm). */
export function warmPageCache(path: string): void {
  const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
  const fd = openSync(path, 'r');
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0) {
      /* reading is the point */
    }
  } finally {
    closeSync(fd);
  }
}

/** sha256 of a file, hex (Node's sha256 runs about 1.4 GB/s here, far faster than sha256sum). */
export function sha256File(path: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
  const fd = openSync(path, 'r');
  try {
    let n: number;
    while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** First line a tool prints for `cmd args` (stdout, else stderr), or "unavailable: reason". */
export function versionOf(cmd: string, args: readonly string[]): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (res.error) return `unavailable: ${res.error.message}`;
  const text = res.stdout.trim() || res.stderr.trim();
  return text.split('\n')[0] ?? '';
}
