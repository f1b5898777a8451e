import { spawn } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { allocatedBytes, copySparse, sha256File, StepError } from './exec.js';
import type { ImageInfo } from './image.js';
import { KeyStream, Prng } from './random.js';

export const BLOCK_BYTES = 4096;
export const CHANGED_FRACTION = 0.01;

/**
 * Where the changed blocks sit. `scattered`: each block at its own random aligned
 * offset, the worst case for any chunk larger than a block. `clustered`: the same
 * number of blocks in runs of 1 MiB (256 blocks; the last run takes the remainder)
 * at random 4 KiB-aligned offsets, like files rewritten whole.
 */
export type MutationPattern = 'scattered' | 'clustered';

/** Blocks per run of the clustered pattern (1 MiB). */
export const CLUSTER_BLOCKS = 256;

export interface MutationInfo {
  readonly pattern: MutationPattern;
  /** The mutated copy of the image. */
  readonly path: string;
  readonly sha256: string;
  readonly allocatedBytes: number;
  /** Distinct 4 KiB blocks overwritten. */
  readonly blocks: number;
  /** Maximal runs of adjacent changed blocks (about `blocks` when scattered). */
  readonly runs: number;
  /** blocks x 4096: the logical size of the change. */
  readonly changedBytes: number;
  /** `zstd -1` of the new content of the changed blocks, concatenated in offset order. */
  readonly compressedChangeBytes: number;
}

/**
 * Returns the cached mutated copy of `image` for `pattern`, building it when missing:
 * 1% of the image's 4 KiB blocks (holes included) overwritten with random data,
 * placed as the pattern says. Same seed, same blocks and bytes; both patterns change
 * the same number of blocks, so their costs compare.
 */
export async function ensureMutated(image: ImageInfo, pattern: MutationPattern, log: (msg: string) => void): Promise<MutationInfo> {
  const base = image.path.replace(/\.img$/, '');
  // The scattered file keeps its original name so existing caches stay valid.
  const key = pattern === 'scattered' ? 'mut1pct' : 'mut1pct-clustered';
  const path = `${base}-${key}.img`;
  const metaPath = `${base}-${key}.json`;
  if (existsSync(path) && existsSync(metaPath)) {
    log(`mutation (${pattern}): cached ${path}`);
    const cached = JSON.parse(readFileSync(metaPath, 'utf8')) as Omit<MutationInfo, 'pattern' | 'runs'> & { runs?: number };
    return { ...cached, pattern, runs: cached.runs ?? cached.blocks };
  }
  const tmp = `${path}.tmp`;
  rmSync(tmp, { force: true });
  copySparse(image.path, tmp);

  const totalBlocks = image.sizeBytes / BLOCK_BYTES;
  const count = Math.round(totalBlocks * CHANGED_FRACTION);
  log(`mutation (${pattern}): overwriting ${count} of ${totalBlocks} 4 KiB blocks`);
  const blocks = pattern === 'scattered' ? scatteredBlocks(image.seed, totalBlocks, count) : clusteredBlocks(image.seed, totalBlocks, count);
  const label = pattern === 'scattered' ? 'mutation-data' : 'mutation-clustered-data';
  const data = new KeyStream(image.seed, label).next(count * BLOCK_BYTES);
  const fd = openSync(tmp, 'r+');
  try {
    blocks.forEach((block, i) => writeSync(fd, data, i * BLOCK_BYTES, BLOCK_BYTES, block * BLOCK_BYTES));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);

  const info: MutationInfo = {
    pattern,
    path,
    sha256: sha256File(path),
    allocatedBytes: allocatedBytes(path),
    blocks: count,
    runs: blocks.filter((b, i) => i === 0 || blocks[i - 1] !== b - 1).length,
    changedBytes: count * BLOCK_BYTES,
    compressedChangeBytes: await zstdSize(data),
  };
  writeFileSync(metaPath, `${JSON.stringify(info, null, 2)}\n`);
  return info;
}

/** `count` distinct block numbers at random, ascending (the original pattern; do not change its draws). */
function scatteredBlocks(seed: number, totalBlocks: number, count: number): number[] {
  const rng = new Prng(seed, 'mutation-offsets');
  const picked = new Set<number>();
  while (picked.size < count) picked.add(rng.int(totalBlocks));
  return [...picked].sort((a, b) => a - b);
}

/**
 * `count` block numbers in runs of CLUSTER_BLOCKS (the last one shorter), each run at
 * a random block offset, ascending. Runs neither overlap nor touch, so each stays a
 * separate 1 MiB change rather than merging into a longer one.
 */
function clusteredBlocks(seed: number, totalBlocks: number, count: number): number[] {
  const rng = new Prng(seed, 'mutation-clustered-offsets');
  const lengths: number[] = [];
  for (let left = count; left > 0; left -= CLUSTER_BLOCKS) lengths.push(Math.min(CLUSTER_BLOCKS, left));
  const runs: { start: number; length: number }[] = [];
  for (const length of lengths) {
    for (;;) {
      const start = rng.int(totalBlocks - length + 1);
      // One free block on each side keeps runs apart.
      if (runs.every((r) => start + length < r.start || r.start + r.length < start)) {
        runs.push({ start, length });
        break;
      }
    }
  }
  return runs.flatMap((r) => Array.from({ length: r.length }, (_, i) => r.start + i)).sort((a, b) => a - b);
}

/** Size of `zstd -1 -c` of the given bytes. */
function zstdSize(data: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('zstd', ['-1', '-q', '-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let size = 0;
    child.stdout.on('data', (b: Buffer) => (size += b.length));
    child.on('error', (e) => reject(new StepError(`cannot start zstd: ${e.message}`)));
    child.on('close', (code) => (code === 0 ? resolve(size) : reject(new StepError(`zstd -1 exited ${code}`))));
    child.stdin.end(data);
  });
}
