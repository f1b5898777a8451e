import { LifeboatError, isLifeboatError } from '../core/errors.js';
import type { BlockSource, Extent } from '../core/block-source.js';
import { ChunkHasher, CHUNK_ID_BYTES, open } from '../format/crypto.js';
import { chunkIdAt, isZeroId, type DiskIndex } from '../format/disk-index.js';
import { packKey } from '../format/layout.js';
import type { PointManifest } from '../format/manifest.js';
import type { PackHeader } from '../format/pack.js';
import { frameAad } from './pack-writer.js';
import { chunkKey, type ChunkLocation, type Repository } from './repository.js';

export interface PointReaderOptions {
  /** Decoded frames kept in memory. */
  cacheBytes?: number;
  /** After a sequential read, this much more is fetched in the background. */
  readAheadBytes?: number;
  /** Recompute every chunk's keyed id after decoding (store verify --full does). */
  verifyChunkIds?: boolean;
  /** Largest single range read of consecutive frames. */
  maxRunBytes?: number;
}

interface FrameNeed {
  readonly pack: PackHeader;
  readonly frame: number;
}

/**
 * A recovery point as a BlockSource: reads fetch the frames that hold the
 * wanted chunks (consecutive frames of a pack in one range read), decode them,
 * and keep them in an LRU cache; sequential readers get read-ahead. Used by
 * restore, export and the NBD server.
 */
export class PointReader implements BlockSource {
  readonly sizeBytes: number;
  private readonly cache = new Map<string, Buffer>();
  private cachedBytes = 0;
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private readonly hasher: ChunkHasher | undefined;
  private readonly packKeys = new Map<string, Buffer>();
  private lastEnd = -1;
  private readonly cacheBytes: number;
  private readonly readAheadBytes: number;
  private readonly maxRunBytes: number;
  /** Bytes fetched from storage, for tests and metrics. */
  fetchedBytes = 0;

  private constructor(
    private readonly repo: Repository,
    readonly manifest: PointManifest,
    private readonly index: DiskIndex,
    private readonly chunks: Map<string, ChunkLocation>,
    options: PointReaderOptions,
  ) {
    this.sizeBytes = manifest.diskSizeBytes;
    this.cacheBytes = options.cacheBytes ?? 64 * 2 ** 20;
    this.readAheadBytes = options.readAheadBytes ?? 4 * 2 ** 20;
    this.maxRunBytes = options.maxRunBytes ?? 8 * 2 ** 20;
    this.hasher = options.verifyChunkIds ? new ChunkHasher(repo.key.idKey) : undefined;
  }

  static async open(repo: Repository, manifest: PointManifest, options: PointReaderOptions = {}): Promise<PointReader> {
    const index = await repo.readPointIndex(manifest);
    return new PointReader(repo, manifest, index, await repo.chunkIndex(), options);
  }

  /** Locations of every stored chunk of the point; MISSING_OBJECT if one is unknown. */
  locate(slot: number): ChunkLocation | undefined {
    const id = chunkIdAt(this.index, slot);
    if (isZeroId(id)) return undefined;
    const loc = this.chunks.get(chunkKey(id));
    if (!loc) {
      throw new LifeboatError('MISSING_OBJECT', `chunk ${id.toString('hex')} of point ${this.manifest.pointId} is in no index`, {
        details: { pointId: this.manifest.pointId, slot, chunk: id.toString('hex') },
      });
    }
    return loc;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new LifeboatError('USAGE', `read [${offset}, ${offset + length}) outside a ${this.sizeBytes}-byte disk`);
    }
    const out = Buffer.alloc(length);
    if (length === 0) return out;
    const frames = await this.loadRange(offset, length);
    const cs = this.index.chunkSizeBytes;
    for (let slot = Math.floor(offset / cs); slot * cs < offset + length; slot++) {
      const loc = this.locate(slot);
      if (!loc) continue;
      const frame = frames.get(frameKey(loc.pack, loc.chunk.frame)) as Buffer;
      const chunk = frame.subarray(loc.chunk.innerOffset, loc.chunk.innerOffset + loc.chunk.length);
      if (chunk.length !== loc.chunk.length) throw corrupt(loc.pack, `frame ${loc.chunk.frame} is shorter than its chunks`);
      if (this.hasher && !this.hasher.id(chunk).equals(loc.chunk.id)) {
        throw corrupt(loc.pack, `chunk in frame ${loc.chunk.frame} does not hash to its id`);
      }
      const start = slot * cs;
      const from = Math.max(offset, start);
      const to = Math.min(offset + length, start + chunk.length);
      chunk.copy(out, from - offset, from - start, to - start);
    }
    if (offset === this.lastEnd && this.readAheadBytes > 0) {
      const aheadStart = offset + length;
      const aheadLen = Math.min(this.readAheadBytes, this.sizeBytes - aheadStart);
      if (aheadLen > 0) void this.loadRange(aheadStart, aheadLen).catch(() => undefined);
    }
    this.lastEnd = offset + length;
    return out;
  }

  /** Decoded frames covering [offset, offset+length), fetched as few range reads as possible. */
  private async loadRange(offset: number, length: number): Promise<Map<string, Buffer>> {
    const cs = this.index.chunkSizeBytes;
    const have = new Map<string, Buffer>();
    const waits: Promise<void>[] = [];
    const needs: FrameNeed[] = [];
    const seen = new Set<string>();
    for (let slot = Math.floor(offset / cs); slot * cs < offset + length; slot++) {
      const loc = this.locate(slot);
      if (!loc) continue;
      const k = frameKey(loc.pack, loc.chunk.frame);
      if (seen.has(k)) continue;
      seen.add(k);
      const cached = this.cache.get(k);
      if (cached) {
        this.cache.delete(k); // refresh LRU position
        this.cache.set(k, cached);
        have.set(k, cached);
        continue;
      }
      const pending = this.inflight.get(k);
      if (pending) waits.push(pending.then((b) => void have.set(k, b)));
      else needs.push({ pack: loc.pack, frame: loc.chunk.frame });
    }
    for (const run of coalesce(needs, this.maxRunBytes)) {
      const p = this.fetchRun(run);
      run.forEach((need, i) => {
        const k = frameKey(need.pack, need.frame);
        const one = p.then((bufs) => bufs[i] as Buffer);
        this.inflight.set(k, one);
        waits.push(one.then((b) => void have.set(k, b)));
        void one.catch(() => undefined).finally(() => this.inflight.delete(k));
      });
    }
    await Promise.all(waits);
    return have;
  }

  private async fetchRun(run: FrameNeed[]): Promise<Buffer[]> {
    const first = run[0] as FrameNeed;
    const last = run[run.length - 1] as FrameNeed;
    const pack = first.pack;
    const start = (pack.frames[first.frame] as { offset: number }).offset;
    const lastRef = pack.frames[last.frame] as { offset: number; length: number };
    const length = lastRef.offset + lastRef.length - start;
    const idHex = pack.packId.toString('hex');
    let raw: Buffer;
    try {
      raw = await this.repo.storage.get(packKey(idHex), { offset: start, length });
    } catch (err) {
      if (isLifeboatError(err, 'NOT_FOUND')) {
        throw new LifeboatError('MISSING_OBJECT', `pack ${idHex} is missing from the store`, { cause: err, details: { object: packKey(idHex) } });
      }
      throw err;
    }
    if (raw.length !== length) throw corrupt(pack, `is shorter than its index says (truncated)`);
    this.fetchedBytes += raw.length;
    let key = this.packKeys.get(idHex);
    if (!key) {
      key = this.repo.key.packKey(pack.packId);
      this.packKeys.set(idHex, key);
    }
    const aadBuf = frameAad(this.repo.config.storeId);
    return run.map((need) => {
      const ref = pack.frames[need.frame] as { offset: number; length: number };
      const plain = open(key, raw.subarray(ref.offset - start, ref.offset - start + ref.length), aadBuf, `frame ${need.frame} of pack ${idHex}`);
      this.remember(frameKey(pack, need.frame), plain);
      return plain;
    });
  }

  private remember(k: string, b: Buffer): void {
    if (this.cache.has(k)) return;
    this.cache.set(k, b);
    this.cachedBytes += b.length;
    while (this.cachedBytes > this.cacheBytes && this.cache.size > 0) {
      const [oldest, buf] = this.cache.entries().next().value as [string, Buffer];
      this.cache.delete(oldest);
      this.cachedBytes -= buf.length;
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const cs = this.index.chunkSizeBytes;
    const end = Math.min(offset + length, this.sizeBytes);
    const out: Extent[] = [];
    let pos = offset;
    while (pos < end) {
      const slot = Math.floor(pos / cs);
      const zero = isZeroId(this.index.ids.subarray(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES));
      const stop = Math.min(end, (slot + 1) * cs);
      const last = out[out.length - 1];
      if (last && last.zero === zero) out[out.length - 1] = { offset: last.offset, length: stop - last.offset, zero };
      else out.push({ offset: pos, length: stop - pos, zero });
      pos = stop;
    }
    return out;
  }

  async close(): Promise<void> {
    this.cache.clear();
    this.cachedBytes = 0;
  }
}

function frameKey(pack: PackHeader, frame: number): string {
  return `${pack.packId.toString('hex')}:${frame}`;
}

function corrupt(pack: PackHeader, message: string): LifeboatError {
  const key = packKey(pack.packId.toString('hex'));
  return new LifeboatError('CORRUPT_OBJECT', `${key} ${message}`, { details: { object: key } });
}

/** Groups frame needs into runs of consecutive frames of one pack, each at most maxBytes. */
function coalesce(needs: FrameNeed[], maxBytes: number): FrameNeed[][] {
  const sorted = [...needs].sort((a, b) => {
    const pa = a.pack.packId.toString('hex');
    const pb = b.pack.packId.toString('hex');
    return pa < pb ? -1 : pa > pb ? 1 : a.frame - b.frame;
  });
  const runs: FrameNeed[][] = [];
  let run: FrameNeed[] = [];
  let runBytes = 0;
  for (const n of sorted) {
    const prev = run[run.length - 1];
    const len = (n.pack.frames[n.frame] as { length: number }).length;
    if (prev && prev.pack === n.pack && prev.frame + 1 === n.frame && runBytes + len <= maxBytes) {
      run.push(n);
      runBytes += len;
    } else {
      if (run.length > 0) runs.push(run);
      run = [n];
      runBytes = len;
    }
  }
  if (run.length > 0) runs.push(run);
  return runs;
}
