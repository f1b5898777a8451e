import { availableParallelism } from 'node:os';
import { LifeboatError, isLifeboatError } from '../core/errors.js';
import type { BlockSource, Extent } from '../core/block-source.js';
import { ChunkHasher, CHUNK_ID_BYTES, open } from '../format/crypto.js';
import { isZeroId, type DiskIndex } from '../format/disk-index.js';
import { packKey } from '../format/layout.js';
import type { PointManifest } from '../format/manifest.js';
import type { PackHeader } from '../format/pack.js';
import { frameAad } from './pack-writer.js';
import type { Repository } from './repository.js';
import { split } from './chunk-worker-protocol.js';
import { WorkerPool } from './worker-pool.js';

export interface PointReaderOptions {
  /** Decoded frames kept in memory. */
  cacheBytes?: number;
  /** After a sequential read, this much more is fetched in the background. */
  readAheadBytes?: number;
  /** Recompute every chunk's keyed id after decoding. */
  verifyChunkIds?: boolean;
  /** Largest single range read of consecutive frames (smaller runs decode in parallel). */
  maxRunBytes?: number;
  /** Worker threads that decrypt and decompress; 0 decodes in this thread. Default: one per core. */
  workers?: number;
}

const ZERO_SLOT = -1;
const MISSING_SLOT = -2;
/** Frames are keyed by pack number and frame number in one integer. */
const FRAME_KEY_SPAN = 2 ** 21;

/**
 * A recovery point as a BlockSource. Opening resolves every chunk slot to its
 * pack and frame once; reads then fetch the frames they need (consecutive
 * frames of a pack in one range read), decode them on worker threads, and keep
 * them in an LRU cache; sequential readers get read-ahead. Used by restore,
 * export, journal processing and the NBD server.
 */
export class PointReader implements BlockSource {
  readonly sizeBytes: number;
  private readonly cache = new Map<number, Buffer>();
  private cachedBytes = 0;
  private readonly inflight = new Map<number, Promise<Buffer>>();
  private readonly hasher: ChunkHasher | undefined;
  private readonly packKeys: (Uint8Array | undefined)[];
  private readonly aad: Uint8Array;
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
    private readonly packs: readonly PackHeader[],
    /** Per slot: pack number, ZERO_SLOT or MISSING_SLOT. */
    private readonly slotPack: Int32Array,
    private readonly slotChunk: Uint32Array,
    private readonly pool: WorkerPool | undefined,
    options: PointReaderOptions,
  ) {
    this.sizeBytes = manifest.diskSizeBytes;
    this.cacheBytes = options.cacheBytes ?? 64 * 2 ** 20;
    this.readAheadBytes = options.readAheadBytes ?? 8 * 2 ** 20;
    this.maxRunBytes = options.maxRunBytes ?? 2 * 2 ** 20;
    this.hasher = options.verifyChunkIds ? new ChunkHasher(repo.key.idKey) : undefined;
    this.packKeys = new Array<Uint8Array | undefined>(packs.length);
    this.aad = new Uint8Array(frameAad(repo.config.storeId));
  }

  static async open(repo: Repository, manifest: PointManifest, options: PointReaderOptions = {}): Promise<PointReader> {
    const index = await repo.readPointIndex(manifest);
    const chunks = await repo.chunkIndex();
    const count = index.ids.length / CHUNK_ID_BYTES;
    const slotPack = new Int32Array(count);
    const slotChunk = new Uint32Array(count);
    const packNumbers = new Map<PackHeader, number>();
    const packs: PackHeader[] = [];
    const chunkNumbers = new Map<PackHeader, Map<unknown, number>>();
    for (let slot = 0, o = 0; slot < count; slot++, o += CHUNK_ID_BYTES) {
      if (isZeroId(index.ids, o)) {
        slotPack[slot] = ZERO_SLOT;
        continue;
      }
      const loc = chunks.get(index.ids, o);
      if (!loc) {
        slotPack[slot] = MISSING_SLOT;
        continue;
      }
      let n = packNumbers.get(loc.pack);
      if (n === undefined) {
        n = packs.length;
        packs.push(loc.pack);
        packNumbers.set(loc.pack, n);
        chunkNumbers.set(loc.pack, new Map(loc.pack.chunks.map((c, i) => [c, i])));
      }
      slotPack[slot] = n;
      slotChunk[slot] = chunkNumbers.get(loc.pack)?.get(loc.chunk) as number;
    }
    const workers = options.workers ?? availableParallelism();
    const pool = workers > 0 ? new WorkerPool(repo.key.idKey, workers) : undefined;
    return new PointReader(repo, manifest, index, packs, slotPack, slotChunk, pool, options);
  }

  /** Throws MISSING_OBJECT if any stored chunk of the point is in no index. */
  checkComplete(): void {
    const missing = this.slotPack.indexOf(MISSING_SLOT);
    if (missing >= 0) throw this.missing(missing);
  }

  private missing(slot: number): LifeboatError {
    const id = this.index.ids.subarray(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES).toString('hex');
    return new LifeboatError('MISSING_OBJECT', `chunk ${id} of point ${this.manifest.pointId} is in no index`, {
      details: { pointId: this.manifest.pointId, slot, chunk: id },
    });
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new LifeboatError('USAGE', `read [${offset}, ${offset + length}) outside a ${this.sizeBytes}-byte disk`);
    }
    // Every byte of `out` is written below: chunk data, or zeros for zero slots and short chunks.
    const out = Buffer.allocUnsafe(length);
    if (length === 0) return out;
    const frames = await this.loadRange(offset, length);
    const cs = this.index.chunkSizeBytes;
    for (let slot = Math.floor(offset / cs); slot * cs < offset + length; slot++) {
      const start = slot * cs;
      const from = Math.max(offset, start);
      const to = Math.min(offset + length, start + cs);
      const p = this.slotPack[slot] as number;
      if (p === ZERO_SLOT) {
        out.fill(0, from - offset, to - offset);
        continue;
      }
      const pack = this.packs[p] as PackHeader;
      const ref = pack.chunks[this.slotChunk[slot] as number] as PackHeader['chunks'][number];
      const frame = frames.get(p * FRAME_KEY_SPAN + ref.frame) as Buffer;
      if (frame.length < ref.innerOffset + ref.length) throw corrupt(pack, `frame ${ref.frame} is shorter than its chunks`);
      if (this.hasher && !this.hasher.id(frame.subarray(ref.innerOffset, ref.innerOffset + ref.length)).equals(ref.id)) {
        throw corrupt(pack, `chunk in frame ${ref.frame} does not hash to its id`);
      }
      // Copy straight out of the frame: no per-chunk view objects on this hot path.
      const copied = from - start < ref.length ? frame.copy(out, from - offset, ref.innerOffset + from - start, ref.innerOffset + Math.min(to - start, ref.length)) : 0;
      if (from - offset + copied < to - offset) out.fill(0, from - offset + copied, to - offset);
    }
    if (offset === this.lastEnd && this.readAheadBytes > 0) {
      const aheadStart = offset + length;
      const aheadLen = Math.min(this.readAheadBytes, this.sizeBytes - aheadStart);
      if (aheadLen > 0) void this.loadRange(aheadStart, aheadLen).catch(() => undefined);
    }
    this.lastEnd = offset + length;
    return out;
  }

  /** Decoded frames covering [offset, offset+length), fetched in as few range reads as possible. */
  private async loadRange(offset: number, length: number): Promise<Map<number, Buffer>> {
    const cs = this.index.chunkSizeBytes;
    const have = new Map<number, Buffer>();
    const waits: Promise<void>[] = [];
    const needs: number[] = [];
    for (let slot = Math.floor(offset / cs); slot * cs < offset + length; slot++) {
      const p = this.slotPack[slot] as number;
      if (p === ZERO_SLOT) continue;
      if (p === MISSING_SLOT) throw this.missing(slot);
      const k = p * FRAME_KEY_SPAN + ((this.packs[p] as PackHeader).chunks[this.slotChunk[slot] as number] as { frame: number }).frame;
      if (have.has(k) || needs.includes(k)) continue;
      const cached = this.cache.get(k);
      if (cached) {
        this.cache.delete(k); // refresh the LRU position
        this.cache.set(k, cached);
        have.set(k, cached);
        continue;
      }
      const pending = this.inflight.get(k);
      if (pending) {
        have.set(k, Buffer.alloc(0));
        waits.push(pending.then((b) => void have.set(k, b)));
      } else needs.push(k);
    }
    for (const run of this.coalesce(needs)) {
      const p = this.fetchRun(run);
      run.forEach((k, i) => {
        const one = p.then((bufs) => bufs[i] as Buffer);
        this.inflight.set(k, one);
        waits.push(one.then((b) => void have.set(k, b)));
        void one.catch(() => undefined).finally(() => this.inflight.delete(k));
      });
    }
    await Promise.all(waits);
    return have;
  }

  /** Groups frame keys into runs of consecutive frames of one pack, each at most maxRunBytes. */
  private coalesce(keys: number[]): number[][] {
    const sorted = [...keys].sort((a, b) => a - b);
    const runs: number[][] = [];
    let run: number[] = [];
    let runBytes = 0;
    for (const k of sorted) {
      const pack = this.packs[Math.floor(k / FRAME_KEY_SPAN)] as PackHeader;
      const len = (pack.frames[k % FRAME_KEY_SPAN] as { length: number }).length;
      const prev = run[run.length - 1];
      if (prev !== undefined && prev + 1 === k && runBytes + len <= this.maxRunBytes) {
        run.push(k);
        runBytes += len;
      } else {
        if (run.length > 0) runs.push(run);
        run = [k];
        runBytes = len;
      }
    }
    if (run.length > 0) runs.push(run);
    return runs;
  }

  private async fetchRun(run: number[]): Promise<Buffer[]> {
    const { raw, packNo, start, frames } = await this.fetchRaw(run);
    const key = this.packKeyOf(packNo);
    const what = `frame of pack ${(this.packs[packNo] as PackHeader).packId.toString('hex')}`;
    let plains: Buffer[];
    if (this.pool) {
      const spans = Uint32Array.from(frames.flatMap((f) => [f.offset - start, f.length]));
      const res = await this.pool.run({ type: 'open', key, aad: this.aad, buffer: raw, spans, what }, [raw]);
      if (res.type !== 'open') throw new LifeboatError('INTERNAL', 'unexpected worker reply');
      plains = split(res.joined, res.lengths);
    } else {
      const bytes = Buffer.from(raw);
      plains = frames.map((f) => open(Buffer.from(key), bytes.subarray(f.offset - start, f.offset - start + f.length), Buffer.from(this.aad), what));
    }
    run.forEach((k, i) => this.remember(k, plains[i] as Buffer));
    return plains;
  }

  private remember(k: number, b: Buffer): void {
    if (this.cache.has(k)) return;
    this.cache.set(k, b);
    this.cachedBytes += b.length;
    while (this.cachedBytes > this.cacheBytes && this.cache.size > 0) {
      const [oldest, buf] = this.cache.entries().next().value as [number, Buffer];
      this.cache.delete(oldest);
      this.cachedBytes -= buf.length;
    }
  }

  /**
   * Writes every stored chunk of the point into the file `fd` at its disk
   * offset; zero chunks are skipped (the caller provides zeros: a fresh sparse
   * file, or its own zero fill). Each frame is fetched once, however many slots
   * share it, in runs of consecutive frames; worker threads decode and write,
   * so this thread only fetches. Returns the bytes written.
   */
  async writeTo(fd: number, options: { parallel?: number; onProgress?: (writtenBytes: number) => void } = {}): Promise<number> {
    this.checkComplete();
    const cs = this.index.chunkSizeBytes;
    const frameOf = (slot: number): number =>
      (this.slotPack[slot] as number) * FRAME_KEY_SPAN + ((this.packs[this.slotPack[slot] as number] as PackHeader).chunks[this.slotChunk[slot] as number] as { frame: number }).frame;
    const slots: number[] = [];
    for (let slot = 0; slot < this.slotPack.length; slot++) if ((this.slotPack[slot] as number) >= 0) slots.push(slot);
    const keys = new Float64Array(this.slotPack.length);
    for (const slot of slots) keys[slot] = frameOf(slot);
    const order = Uint32Array.from(slots).sort((a, b) => (keys[a] as number) - (keys[b] as number) || a - b);

    // Tasks: runs of consecutive frames of one pack, with every chunk write they feed.
    interface Task {
      frames: number[];
      writes: number[];
      ids: Buffer[];
      bytes: number;
    }
    const tasks: Task[] = [];
    let task: Task | undefined;
    for (const slot of order) {
      const k = keys[slot] as number;
      const pack = this.packs[Math.floor(k / FRAME_KEY_SPAN)] as PackHeader;
      const ref = pack.chunks[this.slotChunk[slot] as number] as PackHeader['chunks'][number];
      const last = task?.frames[task.frames.length - 1];
      if (!task || (last !== k && (last === undefined || last + 1 !== k || task.bytes + (pack.frames[ref.frame] as { length: number }).length > this.maxRunBytes))) {
        task = { frames: [k], writes: [], ids: [], bytes: (pack.frames[ref.frame] as { length: number }).length };
        tasks.push(task);
      } else if (last !== k) {
        task.frames.push(k);
        task.bytes += (pack.frames[ref.frame] as { length: number }).length;
      }
      task.writes.push(slot * cs, task.frames.length - 1, ref.innerOffset, Math.min(ref.length, this.sizeBytes - slot * cs));
      if (this.hasher) task.ids.push(ref.id);
    }

    const pool = this.pool ?? new WorkerPool(this.repo.key.idKey);
    let next = 0;
    let written = 0;
    const lane = async (): Promise<void> => {
      while (next < tasks.length) {
        const t = tasks[next++] as Task;
        const { raw, packNo, start, frames } = await this.fetchRaw(t.frames);
        const spans = Uint32Array.from(frames.flatMap((f) => [f.offset - start, f.length]));
        const res = await pool.run(
          {
            type: 'write',
            key: this.packKeyOf(packNo),
            aad: this.aad,
            buffer: raw,
            spans,
            what: `frame of pack ${(this.packs[packNo] as PackHeader).packId.toString('hex')}`,
            fd,
            writes: Float64Array.from(t.writes),
            ...(this.hasher ? { ids: new Uint8Array(Buffer.concat(t.ids)) } : {}),
          },
          [raw],
        );
        if (res.type !== 'write') throw new LifeboatError('INTERNAL', 'unexpected worker reply');
        written += res.bytesWritten;
        options.onProgress?.(written);
      }
    };
    try {
      await Promise.all(Array.from({ length: options.parallel ?? pool.size * 2 }, lane));
    } finally {
      if (pool !== this.pool) await pool.close();
    }
    return written;
  }

  /** Fetches the consecutive frames `keys` of one pack in one range read, as a transferable buffer. */
  private async fetchRaw(keys: number[]): Promise<{ raw: ArrayBuffer; packNo: number; start: number; frames: { offset: number; length: number }[] }> {
    const packNo = Math.floor((keys[0] as number) / FRAME_KEY_SPAN);
    const pack = this.packs[packNo] as PackHeader;
    const frames = keys.map((k) => pack.frames[k % FRAME_KEY_SPAN] as { offset: number; length: number });
    const start = (frames[0] as { offset: number }).offset;
    const last = frames[frames.length - 1] as { offset: number; length: number };
    const length = last.offset + last.length - start;
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
    if (raw.length !== length) throw corrupt(pack, 'is shorter than its index says (truncated)');
    this.fetchedBytes += raw.length;
    const whole = raw.byteOffset === 0 && raw.byteLength === raw.buffer.byteLength ? (raw.buffer as ArrayBuffer) : (raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length) as ArrayBuffer);
    return { raw: whole, packNo, start, frames };
  }

  private packKeyOf(packNo: number): Uint8Array {
    let key = this.packKeys[packNo];
    if (!key) {
      key = new Uint8Array(this.repo.key.packKey((this.packs[packNo] as PackHeader).packId));
      this.packKeys[packNo] = key;
    }
    return key;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const cs = this.index.chunkSizeBytes;
    const end = Math.min(offset + length, this.sizeBytes);
    const out: Extent[] = [];
    let pos = offset;
    while (pos < end) {
      const slot = Math.floor(pos / cs);
      const zero = this.slotPack[slot] === ZERO_SLOT;
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
    await this.pool?.close();
  }
}

function corrupt(pack: PackHeader, message: string): LifeboatError {
  const key = packKey(pack.packId.toString('hex'));
  return new LifeboatError('CORRUPT_OBJECT', `${key} ${message}`, { details: { object: key } });
}
