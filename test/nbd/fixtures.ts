import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BlockSource, Extent } from '../../src/core/block-source.js';

const MiB = 1024 * 1024;

/** One data run in the test image; everything outside the runs is a hole. */
export interface DataRun {
  readonly offset: number;
  readonly length: number;
  /** A fill byte, or 'random' for deterministic pseudo-random bytes. */
  readonly fill: number | 'random';
}

/**
 * The test image: 40 MiB + 1536 bytes (an unaligned tail on purpose) with data at
 * the start, a small run in the middle, a random run, and a tail; holes between.
 */
export const IMAGE_SIZE = 40 * MiB + 1536;
export const IMAGE_RUNS: readonly DataRun[] = [
  { offset: 0, length: 1 * MiB, fill: 0xab },
  { offset: 8 * MiB, length: 64 * 1024, fill: 0xcd },
  { offset: 20 * MiB, length: 4 * MiB, fill: 'random' },
  { offset: IMAGE_SIZE - 1536, length: 1536, fill: 0xef },
];

function runBytes(run: DataRun): Buffer {
  if (run.fill !== 'random') return Buffer.alloc(run.length, run.fill);
  const out = Buffer.alloc(run.length);
  let x = 0x9e3779b9;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Writes the sparse test image into `dir` and returns its path. */
export async function writeTestImage(dir: string): Promise<string> {
  const path = join(dir, 'source.raw');
  const fh = await open(path, 'w');
  try {
    await fh.truncate(IMAGE_SIZE);
    for (const run of IMAGE_RUNS) await fh.write(runBytes(run), 0, run.length, run.offset);
  } finally {
    await fh.close();
  }
  return path;
}

/** The image's expected content, built in memory (independent of the file). */
export function expectedImage(): Buffer {
  const out = Buffer.alloc(IMAGE_SIZE);
  for (const run of IMAGE_RUNS) runBytes(run).copy(out, run.offset);
  return out;
}

const SCAN_BLOCK = 64 * 1024;

/**
 * A BlockSource over a local file for tests. Extents come from scanning the file
 * once at open: every 64 KiB block that reads as zeros is a zero extent.
 */
export class FileBlockSource implements BlockSource {
  private constructor(
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
    private readonly zeroBlocks: readonly boolean[],
  ) {}

  static async open(path: string): Promise<FileBlockSource> {
    const fh = await open(path, 'r');
    const size = (await fh.stat()).size;
    const zeroBlocks: boolean[] = [];
    const buf = Buffer.alloc(SCAN_BLOCK);
    for (let at = 0; at < size; at += SCAN_BLOCK) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(SCAN_BLOCK, size - at), at);
      zeroBlocks.push(buf.subarray(0, bytesRead).every((b) => b === 0));
    }
    return new FileBlockSource(fh, size, zeroBlocks);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.sizeBytes) throw new RangeError('read outside the image');
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new Error('short read');
      done += bytesRead;
    }
    return buf;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const out: Extent[] = [];
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const block = Math.floor(at / SCAN_BLOCK);
      const zero = this.zeroBlocks[block] ?? false;
      let next = Math.min(end, (block + 1) * SCAN_BLOCK);
      while (next < end && (this.zeroBlocks[Math.floor(next / SCAN_BLOCK)] ?? false) === zero) {
        next = Math.min(end, next + SCAN_BLOCK);
      }
      out.push({ offset: at, length: next - at, zero });
      at = next;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** An in-memory BlockSource with hooks for fault and latency injection. */
export class MemoryBlockSource implements BlockSource {
  constructor(
    private readonly data: Buffer,
    private readonly hooks: {
      beforeRead?: (offset: number, length: number) => Promise<void> | void;
      extents?: (offset: number, length: number) => Promise<Extent[]>;
    } = {},
  ) {}

  get sizeBytes(): number {
    return this.data.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    await this.hooks.beforeRead?.(offset, length);
    return Buffer.from(this.data.subarray(offset, offset + length));
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    if (this.hooks.extents !== undefined) return this.hooks.extents(offset, length);
    return [{ offset, length, zero: false }];
  }

  async close(): Promise<void> {}
}

const execFileAsync = promisify(execFile);

/** Runs a tool and returns stdout; a failure carries the tool's stderr in the message. */
export async function run(file: string, args: readonly string[], timeoutMs = 120_000): Promise<string> {
  try {
    const { stdout } = await execFileAsync(file, [...args], { timeout: timeoutMs, maxBuffer: 64 * MiB, encoding: 'utf8' });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message?: string };
    throw new Error(`${file} ${args.join(' ')} failed: ${e.stderr ?? ''} ${e.message ?? ''}`);
  }
}

/** Runs a tool expected to fail; resolves with its stderr+stdout, rejects if it succeeded. */
export async function runExpectingFailure(file: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout, stderr } = await execFileAsync(file, [...args], { timeout: 60_000, encoding: 'utf8' });
    throw new Error(`${file} ${args.join(' ')} unexpectedly succeeded: ${stdout}${stderr}`);
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; code?: unknown };
    if (typeof e.code !== 'number') throw err;
    return `${e.stderr ?? ''}${e.stdout ?? ''}`;
  }
}
