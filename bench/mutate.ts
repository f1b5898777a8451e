import { spawn } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { allocatedBytes, copySparse, sha256File, StepError } from './exec.js';
import type { ImageInfo } from './image.js';
import { KeyStream, Prng } from './random.js';

export const BLOCK_BYTES = 4096;
export const CHANGED_FRACTION = 0.01;

export interface MutationInfo {
  /** The mutated copy of the image. */
  readonly path: string;
  readonly sha256: string;
  readonly allocatedBytes: number;
  /** Distinct 4 KiB blocks overwritten. */
  readonly blocks: number;
  /** blocks x 4096: the logical size of the change. */
  readonly changedBytes: number;
  /** `zstd -1` of the new content of the changed blocks, concatenated in offset order. */
  readonly compressedChangeBytes: number;
}

/**
 * Returns the cached mutated copy of `image`, building it when missing: 1% of the
 * image's 4 KiB blocks, picked at random aligned offsets over the whole image
 * (holes included), overwritten with random data. Same seed, same blocks and bytes.
 */
export async function ensureMutated(image: ImageInfo, log: (msg: string) => void): Promise<MutationInfo> {
  const base = image.path.replace(/\.img$/, '');
  const path = `${base}-mut1pct.img`;
  const metaPath = `${base}-mut1pct.json`;
  if (existsSync(path) && existsSync(metaPath)) {
    log(`mutation: cached ${path}`);
    return JSON.parse(readFileSync(metaPath, 'utf8')) as MutationInfo;
  }
  const tmp = `${path}.tmp`;
  rmSync(tmp, { force: true });
  copySparse(image.path, tmp);

  const totalBlocks = image.sizeBytes / BLOCK_BYTES;
  const count = Math.round(totalBlocks * CHANGED_FRACTION);
  log(`mutation: overwriting ${count} of ${totalBlocks} 4 KiB blocks`);
  const rng = new Prng(image.seed, 'mutation-offsets');
  const picked = new Set<number>();
  while (picked.size < count) picked.add(rng.int(totalBlocks));
  const blocks = [...picked].sort((a, b) => a - b);
  const data = new KeyStream(image.seed, 'mutation-data').next(count * BLOCK_BYTES);
  const fd = openSync(tmp, 'r+');
  try {
    blocks.forEach((block, i) => writeSync(fd, data, i * BLOCK_BYTES, BLOCK_BYTES, block * BLOCK_BYTES));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);

  const info: MutationInfo = {
    path,
    sha256: sha256File(path),
    allocatedBytes: allocatedBytes(path),
    blocks: count,
    changedBytes: count * BLOCK_BYTES,
    compressedChangeBytes: await zstdSize(data),
  };
  writeFileSync(metaPath, `${JSON.stringify(info, null, 2)}\n`);
  return info;
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
