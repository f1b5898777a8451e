import { LifeboatError } from '../core/errors.js';
import type { BlockSource } from '../core/block-source.js';
import { CHUNK_ID_BYTES } from '../format/crypto.js';
import { isZeroId, newDiskIndex, type DiskIndex } from '../format/disk-index.js';
import type { PointManifest } from '../format/manifest.js';
import { packKey } from '../format/layout.js';
import type { PackHeader } from '../format/pack.js';
import { ChunkIdMap } from './chunk-map.js';
import { DiskLock } from './disk-lock.js';
import { DiskFile } from '../io/disk-file.js';
import { PackWriter, type BatchChunk } from './pack-writer.js';
import { checkDiskName, type Repository } from './repository.js';
import { WorkerPool } from './worker-pool.js';

export interface Progress {
  readonly phase: string;
  readonly doneBytes: number;
  readonly totalBytes: number;
}

export interface BackupOptions {
  readonly disk: string;
  readonly consistency?: 'crash' | 'app';
  /** Ignore earlier points when choosing the parent (chunks are still deduplicated). */
  readonly noParent?: boolean;
  readonly breakLock?: boolean;
  readonly batchBytes?: number;
  readonly onProgress?: (p: Progress) => void;
  /** The point's source position; default: the parent's (failback writes the replica as the newest point of the item's new generation). */
  readonly source?: { readonly generation: number; readonly lastSequence: number };
}

export interface BackupResult {
  readonly manifest: PointManifest;
  readonly newChunks: number;
  readonly reusedChunks: number;
  readonly zeroChunks: number;
  readonly bytesRead: number;
  readonly bytesStored: number;
}

/** Backs up an image file or block device into a new recovery point. */
export async function backupPath(repo: Repository, sourcePath: string, options: BackupOptions): Promise<BackupResult> {
  const source = await DiskFile.open(sourcePath);
  try {
    return await backupSource(repo, source, options);
  } finally {
    await source.close();
  }
}

/**
 * Reads the allocated ranges of `source` in chunk-aligned batches on several
 * lanes at once, hashes them on the worker pool, stores the chunks the store
 * does not have yet, and commits index then manifest. Zero and unallocated
 * chunks get the zero id and are never stored.
 */
export async function backupSource(repo: Repository, source: BlockSource, options: BackupOptions): Promise<BackupResult> {
  checkDiskName(options.disk);
  const cs = repo.chunkSizeBytes;
  const size = source.sizeBytes;
  const lock = await DiskLock.acquire(repo, options.disk, 'backup', { breakLock: options.breakLock });
  const pool = new WorkerPool(repo.key.idKey);
  try {
    const parent = options.noParent ? undefined : await repo.latestPoint(options.disk);
    const known = await repo.chunkIndex();
    const index = newDiskIndex(size, cs);
    const writer = new PackWriter(repo, pool);
    const batches = await planBatches(source, cs, options.batchBytes ?? 4 * 2 ** 20);
    const reusedPacks = new Set<PackHeader>();
    let nextBatchId = 1;
    const seenNew = new ChunkIdMap<Buffer>((id) => id);
    let newChunks = 0;
    let reusedChunks = 0;
    let bytesRead = 0;
    let doneBytes = size - batches.reduce((n, b) => n + b.length, 0); // holes count as done
    let next = 0;
    options.onProgress?.({ phase: 'backup', doneBytes, totalBytes: size });

    const lane = async (): Promise<void> => {
      while (next < batches.length) {
        const batch = batches[next++] as { offset: number; length: number };
        const batchId = nextBatchId++;
        let res;
        if (source instanceof DiskFile) {
          // The worker reads the file itself: the bytes never pass through this thread.
          res = await pool.run({ type: 'hash', batchId, fd: source.fd, position: batch.offset, length: batch.length, chunkSizeBytes: cs });
        } else {
          const buf = await source.read(batch.offset, batch.length);
          const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer;
          res = await pool.run({ type: 'hash', batchId, buffer: ab, length: batch.length, chunkSizeBytes: cs }, [ab]);
        }
        bytesRead += batch.length;
        if (res.type !== 'hash') throw new LifeboatError('INTERNAL', 'unexpected worker reply');
        const ids = Buffer.from(res.ids);
        const firstSlot = batch.offset / cs;
        const fresh: BatchChunk[] = [];
        for (let i = 0, o = 0; o < ids.length; i++, o += CHUNK_ID_BYTES) {
          if (isZeroId(ids, o)) continue;
          ids.copy(index.ids, (firstSlot + i) * CHUNK_ID_BYTES, o, o + CHUNK_ID_BYTES);
          const loc = known.get(ids, o);
          if (loc) {
            reusedChunks++;
            reusedPacks.add(loc.pack);
          } else {
            const id = ids.subarray(o, o + CHUNK_ID_BYTES);
            if (!seenNew.add(id, 0, id)) reusedChunks++; // a repeat of a chunk this backup already stores
            else {
              newChunks++;
              fresh.push({ id, offset: i * cs, length: Math.min(cs, batch.length - i * cs) });
            }
          }
        }
        await writer.addBatch({ worker: res.worker, batchId }, fresh);
        doneBytes += batch.length;
        options.onProgress?.({ phase: 'backup', doneBytes, totalBytes: size });
      }
    };
    await Promise.all(Array.from({ length: pool.size + 2 }, lane));
    const written = await writer.finish();
    if (written.length > 0) await repo.writeIndex(written);
    await checkPacksStillThere(repo, reusedPacks);
    await lock.check();
    const zeroChunks = countZero(index);
    const manifest = await repo.commitPoint(index, {
      disk: options.disk,
      diskSizeBytes: size,
      chunkSizeBytes: cs,
      consistency: options.consistency ?? 'crash',
      parentPointId: parent?.pointId ?? null,
      source: options.source ?? { generation: parent?.source.generation ?? 0, lastSequence: parent?.source.lastSequence ?? 0 },
      origin: 'backup',
      stats: { dataChunks: index.ids.length / CHUNK_ID_BYTES - zeroChunks, zeroChunks, newChunks, bytesRead, bytesStored: writer.bytesStored },
    });
    return { manifest, newChunks, reusedChunks, zeroChunks, bytesRead, bytesStored: manifest.stats.bytesStored };
  } finally {
    await pool.close();
    await lock.release();
  }
}

/**
 * Chunk-aligned ranges covering every non-zero extent, cut at `batchBytes`.
 * Ranges between them are holes: their chunks keep the zero id.
 */
export async function planBatches(source: BlockSource, chunkBytes: number, batchBytes: number): Promise<{ offset: number; length: number }[]> {
  const size = source.sizeBytes;
  const ranges: { offset: number; end: number }[] = [];
  for (const e of await source.extents(0, size)) {
    if (e.zero) continue;
    const start = Math.floor(e.offset / chunkBytes) * chunkBytes;
    const end = Math.min(size, Math.ceil((e.offset + e.length) / chunkBytes) * chunkBytes);
    const last = ranges[ranges.length - 1];
    if (last && start <= last.end) last.end = Math.max(last.end, end);
    else ranges.push({ offset: start, end });
  }
  const step = Math.max(chunkBytes, Math.floor(batchBytes / chunkBytes) * chunkBytes);
  const out: { offset: number; length: number }[] = [];
  for (const r of ranges) {
    for (let o = r.offset; o < r.end; o += step) out.push({ offset: o, length: Math.min(step, r.end - o) });
  }
  return out;
}

function countZero(index: DiskIndex): number {
  let n = 0;
  for (let o = 0; o < index.ids.length; o += CHUNK_ID_BYTES) if (isZeroId(index.ids.subarray(o, o + CHUNK_ID_BYTES))) n++;
  return n;
}

/**
 * A concurrent gc may have swept a pack this writer deduplicated against after
 * our index was loaded; committing then would make a point with holes in it.
 */
export async function checkPacksStillThere(repo: Repository, packs: Set<PackHeader> | Map<string, PackHeader>): Promise<void> {
  const ids = packs instanceof Map ? [...packs.keys()] : [...packs].map((p) => p.packId.toString('hex'));
  for (let i = 0; i < ids.length; i += 16) {
    const infos = await Promise.all(ids.slice(i, i + 16).map((id) => repo.storage.stat(packKey(id))));
    const gone = infos.findIndex((x) => x === undefined);
    if (gone >= 0) {
      repo.forgetChunkIndex();
      throw new LifeboatError('CONFLICT', `pack ${ids[i + gone]} was removed by a concurrent gc; run the backup again`, { retryable: true });
    }
  }
}
