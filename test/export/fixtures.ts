import { execFileSync } from 'node:child_process';
import { openSync, closeSync, ftruncateSync, writeSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { BlockSource, Extent } from '../../src/core/block-source.js';
import { requireTool } from '../helpers/env.js';

/** A byte range that holds data in a generated source image. */
export interface DataRange {
  readonly offset: number;
  readonly length: number;
}

export const MiB = 1024 * 1024;

/**
 * Patterned bytes for [offset, offset+length): every byte depends on its absolute
 * offset, so data written at the wrong place never compares equal. No byte is zero,
 * so a dropped write is visible too.
 */
export function pattern(offset: number, length: number, seed = 0): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    const o = offset + i;
    b[i] = ((Math.imul(o, 0x9e3779b1) >>> 24) ^ (o >>> 9) ^ seed) % 255 + 1;
  }
  return b;
}

/** Sorts and merges overlapping/adjacent ranges, clipped to [0, size). */
export function normalise(ranges: readonly DataRange[], size: number): DataRange[] {
  const sorted = ranges
    .map((r) => ({ offset: Math.max(0, r.offset), end: Math.min(size, r.offset + r.length) }))
    .filter((r) => r.end > r.offset)
    .sort((a, b) => a.offset - b.offset);
  const out: { offset: number; end: number }[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.offset <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out.map((r) => ({ offset: r.offset, length: r.end - r.offset }));
}

/** Writes a sparse file of `size` bytes with patterned data in `ranges` and holes elsewhere. */
export function makeSparseImage(path: string, size: number, ranges: readonly DataRange[], seed = 0): DataRange[] {
  const data = normalise(ranges, size);
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    for (const r of data) {
      for (let done = 0; done < r.length; done += 4 * MiB) {
        const n = Math.min(4 * MiB, r.length - done);
        writeSync(fd, pattern(r.offset + done, n, seed), 0, n, r.offset + done);
      }
    }
  } finally {
    closeSync(fd);
  }
  return data;
}

/**
 * A BlockSource over a generated image file whose data ranges are known: extents()
 * reports exactly those ranges as non-zero and everything else as zero, in as many
 * pieces as the ranges make (no merging), like a fragmented real disk.
 */
export class KnownMapSource implements BlockSource {
  readonly reads: { offset: number; length: number }[] = [];
  private constructor(
    private readonly handle: FileHandle,
    readonly sizeBytes: number,
    private readonly data: readonly DataRange[],
  ) {}

  static async open(path: string, data: readonly DataRange[]): Promise<KnownMapSource> {
    return new KnownMapSource(await open(path, 'r'), statSync(path).size, normalise(data, statSync(path).size));
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset + length > this.sizeBytes) throw new Error(`read outside the disk: ${offset}+${length}`);
    this.reads.push({ offset, length });
    const b = Buffer.alloc(length);
    const { bytesRead } = await this.handle.read(b, 0, length, offset);
    if (bytesRead !== length) throw new Error('short read');
    return b;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const end = offset + length;
    const out: Extent[] = [];
    let at = offset;
    for (const r of this.data) {
      const s = Math.max(r.offset, offset);
      const t = Math.min(r.offset + r.length, end);
      if (t <= s) continue;
      if (s > at) out.push({ offset: at, length: s - at, zero: true });
      out.push({ offset: s, length: t - s, zero: false });
      at = t;
    }
    if (at < end) out.push({ offset: at, length: end - at, zero: true });
    return out;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

const qemuImgPath = (): string => requireTool('qemu-img', 'qemu-utils');

/** Runs qemu-img and returns stdout; a non-zero exit throws with qemu's stderr. */
export function qemuImg(args: readonly string[]): string {
  return execFileSync(qemuImgPath(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs qemu-img and returns exit status and output without throwing. */
export function qemuImgStatus(args: readonly string[]): { status: number; stdout: string; stderr: string } {
  try {
    return { status: 0, stdout: qemuImg(args), stderr: '' };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { status: e.status ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export interface QemuInfo {
  readonly format: string;
  readonly 'virtual-size': number;
  readonly 'actual-size': number;
}

export function qemuInfo(path: string, format: string): QemuInfo {
  return JSON.parse(qemuImg(['info', '--output=json', '-f', format, path])) as QemuInfo;
}

/** Bytes the file occupies on disk (st_blocks * 512). */
export function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}
