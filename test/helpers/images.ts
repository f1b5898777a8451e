import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync, ftruncateSync } from 'node:fs';

/** Deterministic pseudo-random bytes (xorshift), so images are the same every run. */
export function seededBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i + 4 <= length) out.writeUInt32LE(x, i);
    else for (let j = i; j < length; j++) out[j] = (x >>> (8 * (j - i))) & 0xff;
  }
  return out;
}

export interface ImageRegion {
  offset: number;
  data: Buffer;
}

/**
 * Writes a sparse image of `sizeBytes`: regions of random data, compressible
 * text and explicit zeros; everything else is a hole.
 */
export function writeSparseImage(path: string, sizeBytes: number, regions: ImageRegion[]): void {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, sizeBytes);
  for (const r of regions) writeSync(fd, r.data, 0, r.data.length, r.offset);
  closeSync(fd);
}

export function textBlock(length: number, seed: number): Buffer {
  const words = ['disk', 'point', 'vault', 'chunk', 'drill', 'failover', 'ok', 'replica'];
  let s = '';
  let i = seed;
  while (s.length < length) {
    i = (i * 1103515245 + 12345) >>> 0;
    s += `${i % 100000} ${words[i % 8]} ${words[(i >>> 8) % 8]} ok=${i % 2 === 0}\n`;
  }
  return Buffer.from(s.slice(0, length));
}

/** A mixed test image: random, text, zero-filled and hole regions. */
export function writeMixedImage(path: string, sizeBytes: number, seed = 1): void {
  const mib = 2 ** 20;
  writeSparseImage(path, sizeBytes, [
    { offset: 0, data: seededBytes(mib + 512, seed) },
    { offset: 3 * mib, data: textBlock(2 * mib, seed) },
    { offset: 6 * mib, data: Buffer.alloc(mib) },
    { offset: sizeBytes - 8192, data: seededBytes(8192, seed + 1) },
  ]);
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Overwrites `count` random 4 KiB blocks; returns their offsets. */
export function scribble(path: string, sizeBytes: number, count: number): number[] {
  const fd = openSync(path, 'r+');
  const offsets: number[] = [];
  for (let i = 0; i < count; i++) {
    const off = Math.floor(Math.random() * (sizeBytes / 4096)) * 4096;
    writeSync(fd, randomBytes(4096), 0, 4096, off);
    offsets.push(off);
  }
  closeSync(fd);
  return offsets;
}
