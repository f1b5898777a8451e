/**
 * Helpers for the compute driver tests: sources over a Buffer or a file, a
 * source's hash, and the processes that still mention a path (what a destroyed
 * machine must not leave behind).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import type { BlockSource } from '../../src/core/block-source.js';

/** A read-only BlockSource over a Buffer; reads are counted and writes impossible. */
export function bufferSource(data: Buffer): BlockSource & { reads: number } {
  const source = {
    reads: 0,
    sizeBytes: data.length,
    read: async (offset: number, length: number): Promise<Buffer> => {
      source.reads++;
      if (offset < 0 || offset + length > data.length) throw new Error(`read outside the source: ${offset}+${length}`);
      return Buffer.from(data.subarray(offset, offset + length));
    },
    extents: async (offset: number, length: number) => [{ offset, length, zero: false }],
    close: async () => undefined,
  };
  return source;
}

/** sha256 (hex) of everything the source reads. */
export async function hashSource(source: BlockSource, chunkBytes = 4 * 1024 * 1024): Promise<string> {
  const hash = createHash('sha256');
  for (let offset = 0; offset < source.sizeBytes; offset += chunkBytes) {
    hash.update(await source.read(offset, Math.min(chunkBytes, source.sizeBytes - offset)));
  }
  return hash.digest('hex');
}

/** Pids of live processes whose command line contains `needle` (e.g. a machine's state directory). */
export async function processesMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      if (cmdline.includes(needle)) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}
