import type { BlockSource } from '../../core/block-source.js';
import { LifeboatError } from '../../core/errors.js';
import type { ChangedExtent } from '../tracker.js';
import { CHUNK_BYTES, DIGEST_BYTES, chunkDigestInto, type DigestMap, type PendingDigests } from '../digest-map.js';
import { hashPool, type HashPool } from './hash-pool.js';

/**
 * The full compare every driver runs when it cannot vouch for the writes since
 * the last committed cut (and the whole of the `scan` driver): read the disk's
 * allocated data, hash every 4 KiB chunk, and report the chunks whose digest
 * differs from the digest map, merged into ascending extents of at most 16 MiB.
 * Holes are not read: their chunks are zero, and reported (with zero data)
 * only where the map holds something else.
 *
 * Every extent carries the digests of exactly the bytes it yields, so staging
 * them describes what was shipped even when the disk changes during the scan.
 */

export const MAX_EXTENT_BYTES = 16 * 1024 * 1024;
const DEFAULT_READ_BYTES = 4 * 1024 * 1024;
/** Holes are looked up this much of the disk at a time. */
const HOLE_WINDOW_BYTES = 1024 * 1024 * 1024;

export interface ComparedExtent extends ChangedExtent {
  /** 16 bytes per chunk of `data`: the digests to stage for this extent. */
  readonly digests: Buffer;
}

/** Disks at least this large are read and hashed by worker threads when the source has a file descriptor. */
const POOL_MIN_BYTES = 64 * 1024 * 1024;

/**
 * What a full compare reads: a BlockSource, with an optional allocation-free
 * read, and optionally the file descriptor worker threads may read through.
 */
export type CompareSource = Pick<BlockSource, 'sizeBytes' | 'read' | 'extents'> & {
  readInto?(buf: Buffer, offset: number): Promise<void>;
  readonly fd?: number;
};

export interface FullCompareOptions {
  /** Bytes per sequential read, a multiple of 4096, ≥ 1 MiB (default 4 MiB). */
  readonly readBytes?: number;
  /** Called after each piece of the disk is compared, with the bytes compared so far. */
  readonly onProgress?: (comparedBytes: number) => void;
  /**
   * Worker threads that read and hash. Default: the process's pool when the
   * source has a file descriptor and is at least 64 MiB; null: this thread.
   */
  readonly pool?: HashPool | null;
}

interface Piece {
  readonly offset: number;
  readonly length: number;
  /** A hole: its chunks are zero and are not read. */
  readonly hole: boolean;
}

function splitPieces(from: number, to: number, hole: boolean, readBytes: number, out: Piece[]): void {
  for (let o = from; o < to; o += readBytes) out.push({ offset: o, length: Math.min(readBytes, to - o), hole });
}

/** The disk as pieces of ≤ readBytes, data spans rounded out to whole chunks, the rest holes. */
async function* planPieces(source: CompareSource, readBytes: number): AsyncGenerator<Piece> {
  const size = source.sizeBytes;
  for (let w = 0; w < size; w += HOLE_WINDOW_BYTES) {
    const wEnd = Math.min(size, w + HOLE_WINDOW_BYTES);
    const spans: [number, number][] = [];
    for (const e of await source.extents(w, wEnd - w)) {
      if (e.zero || e.length === 0) continue;
      const s = Math.max(w, Math.floor(e.offset / CHUNK_BYTES) * CHUNK_BYTES);
      const t = Math.min(wEnd, Math.ceil((e.offset + e.length) / CHUNK_BYTES) * CHUNK_BYTES);
      const last = spans[spans.length - 1];
      if (last && s <= last[1]) last[1] = Math.max(last[1], t);
      else spans.push([s, t]);
    }
    const pieces: Piece[] = [];
    let pos = w;
    for (const [s, t] of spans) {
      splitPieces(pos, s, true, readBytes, pieces);
      splitPieces(s, t, false, readBytes, pieces);
      pos = t;
    }
    splitPieces(pos, wEnd, true, readBytes, pieces);
    yield* pieces;
  }
}

/** Accumulates differing chunks into extents of ≤ 16 MiB. */
class ExtentBuilder {
  private offset = -1;
  private end = -1;
  private data: Buffer[] = [];
  private digests: Buffer[] = [];
  private bytes = 0;

  /** Adds contiguous differing chunks; returns the extents completed by it. */
  add(offset: number, data: Buffer, digests: Buffer, out: ComparedExtent[]): void {
    if (this.offset >= 0 && offset !== this.end) this.flush(out);
    let pos = 0;
    while (pos < data.length) {
      if (this.offset < 0) this.offset = offset + pos;
      const room = MAX_EXTENT_BYTES - this.bytes;
      const take = Math.min(room, data.length - pos);
      this.data.push(data.subarray(pos, pos + take));
      const c0 = pos / CHUNK_BYTES;
      const c1 = Math.ceil((pos + take) / CHUNK_BYTES);
      this.digests.push(digests.subarray(c0 * DIGEST_BYTES, c1 * DIGEST_BYTES));
      this.bytes += take;
      pos += take;
      this.end = offset + pos;
      if (this.bytes >= MAX_EXTENT_BYTES) this.flush(out);
    }
  }

  flush(out: ComparedExtent[]): void {
    if (this.offset < 0) return;
    const one = <T extends Buffer>(parts: T[]): Buffer => (parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts));
    out.push({ offset: this.offset, data: one(this.data), digests: one(this.digests) });
    this.offset = -1;
    this.end = -1;
    this.data = [];
    this.digests = [];
    this.bytes = 0;
  }
}

interface Loaded {
  readonly piece: Piece;
  /** The piece's bytes (null for a hole) and their digests, or null to hash here. */
  readonly read: Promise<{ data: Buffer | null; digests: Buffer | null }>;
  readonly map: Promise<Buffer>;
}

function load(source: CompareSource, map: DigestMap, piece: Piece, pool: HashPool | null): Loaded {
  let read: Promise<{ data: Buffer | null; digests: Buffer | null }>;
  if (piece.hole) {
    read = Promise.resolve({ data: null, digests: null });
  } else if (pool && source.fd !== undefined) {
    read = pool.run(source.fd, piece.offset, piece.length);
  } else if (source.readInto) {
    const buf = Buffer.allocUnsafe(piece.length);
    read = source.readInto(buf, piece.offset).then(() => ({ data: buf, digests: null }));
  } else {
    read = source.read(piece.offset, piece.length).then((data) => ({ data, digests: null }));
  }
  const mapped = map.read(piece.offset / CHUNK_BYTES, Math.ceil(piece.length / CHUNK_BYTES));
  // The loop awaits both; until then a rejection must not count as unhandled.
  read.catch(() => undefined);
  mapped.catch(() => undefined);
  return { piece, read, map: mapped };
}

/**
 * Compares the whole of `source` with `map`. The next piece is read while the
 * current one is hashed and its extents consumed, so a cached image compares
 * at hashing speed. Nothing is staged here: see compareAndStage().
 */
export async function* fullCompare(source: CompareSource, map: DigestMap, options: FullCompareOptions = {}): AsyncGenerator<ComparedExtent> {
  const readBytes = options.readBytes ?? DEFAULT_READ_BYTES;
  if (readBytes % CHUNK_BYTES !== 0 || readBytes < 1024 * 1024) {
    throw new LifeboatError('INTERNAL', `full compare read size ${readBytes} is not a multiple of 4096 of at least 1 MiB`);
  }
  const pool = options.pool === undefined ? (source.fd !== undefined && source.sizeBytes >= POOL_MIN_BYTES ? hashPool() : null) : options.pool;
  // Pieces in flight: one per worker and one more, or the next read while this thread hashes.
  const depth = pool ? pool.size + 1 : 2;
  const plan = planPieces(source, readBytes);
  const builder = new ExtentBuilder();
  const out: ComparedExtent[] = [];
  const queue: Loaded[] = [];
  let planned = false;
  const fill = async () => {
    while (!planned && queue.length < depth) {
      const r = await plan.next();
      if (r.done) planned = true;
      else queue.push(load(source, map, r.value, pool));
    }
  };
  let compared = 0;
  for (await fill(); queue.length > 0; await fill()) {
    const cur = queue.shift() as Loaded;
    await fill();
    const [{ data, digests: hashed }, mapped] = await Promise.all([cur.read, cur.map]);
    const { offset, length } = cur.piece;
    const n = Math.ceil(length / CHUNK_BYTES);
    let digests: Buffer;
    if (hashed) {
      digests = hashed;
    } else if (data) {
      digests = Buffer.allocUnsafe(n * DIGEST_BYTES);
      for (let k = 0; k < n; k++) chunkDigestInto(data.subarray(k * CHUNK_BYTES, Math.min(length, (k + 1) * CHUNK_BYTES)), digests, k * DIGEST_BYTES);
    } else {
      digests = Buffer.alloc(n * DIGEST_BYTES);
    }
    if (digests.equals(mapped)) {
      builder.flush(out);
    } else {
      let k = 0;
      while (k < n) {
        if (digests.compare(mapped, k * DIGEST_BYTES, (k + 1) * DIGEST_BYTES, k * DIGEST_BYTES, (k + 1) * DIGEST_BYTES) === 0) {
          builder.flush(out);
          k++;
          continue;
        }
        let j = k + 1;
        while (j < n && digests.compare(mapped, j * DIGEST_BYTES, (j + 1) * DIGEST_BYTES, j * DIGEST_BYTES, (j + 1) * DIGEST_BYTES) !== 0) j++;
        const from = k * CHUNK_BYTES;
        const to = Math.min(length, j * CHUNK_BYTES);
        const bytes = data ? data.subarray(from, to) : Buffer.alloc(to - from);
        builder.add(offset + from, bytes, digests.subarray(k * DIGEST_BYTES, j * DIGEST_BYTES), out);
        k = j;
      }
    }
    compared += length;
    options.onProgress?.(compared);
    while (out.length > 0) yield out.shift() as ComparedExtent;
  }
  builder.flush(out);
  yield* out;
}

/**
 * A full compare that stages the digests of every extent it yields into
 * `staging` before yielding it. The caller seals the staging after the last
 * extent (or discards it on failure).
 */
export async function* compareAndStage(
  source: CompareSource,
  map: DigestMap,
  staging: PendingDigests,
  options: FullCompareOptions = {},
): AsyncGenerator<ChangedExtent> {
  for await (const e of fullCompare(source, map, options)) {
    await staging.add(e.offset / CHUNK_BYTES, e.digests);
    yield { offset: e.offset, data: e.data };
  }
}
