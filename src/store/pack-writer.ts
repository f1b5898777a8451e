import { LifeboatError } from '../core/errors.js';
import { aad, ENVELOPE_OVERHEAD, seal } from '../format/crypto.js';
import { packKey as packObjectKey } from '../format/layout.js';
import { encodePackHeader, encodeTrailer, PACK_TRAILER_BYTES, type ChunkRef, type FrameRef, type PackHeader } from '../format/pack.js';
import { ChunkIdMap } from './chunk-map.js';
import type { Repository } from './repository.js';
import { split } from './chunk-worker-protocol.js';
import type { PoolRequest, WorkerPool } from './worker-pool.js';

/** A new chunk whose bytes are in this thread. */
export interface NewChunk {
  readonly id: Buffer;
  readonly data: Buffer;
}

/** A new chunk whose bytes sit in a batch a worker hashed and still holds. */
export interface BatchChunk {
  readonly id: Buffer;
  readonly offset: number;
  readonly length: number;
}

type FrameChunk = NewChunk | BatchChunk;

function chunkLength(c: FrameChunk): number {
  return 'data' in c ? c.data.length : c.length;
}

export interface PackWriterOptions {
  /** A pack is closed once this much plaintext has been assigned to it. */
  targetPackBytes?: number;
  /** Chunks are sealed together up to this much plaintext per frame. */
  frameTargetBytes?: number;
  /** Pack uploads in flight before addChunks() waits. */
  maxUploads?: number;
  /** Seal tasks in flight before addChunks() waits. */
  maxSealTasks?: number;
}

interface OpenPack {
  readonly id: Buffer;
  readonly key: Uint8Array;
  plaintextAssigned: number;
  pendingTasks: number;
  closed: boolean;
  readonly parts: Buffer[];
  dataBytes: number;
  readonly frames: FrameRef[];
  readonly chunks: ChunkRef[];
}

/** The frame-sealing AAD: the pack key already binds frames to their pack. */
export function frameAad(storeId: string): Buffer {
  return aad(storeId, 'frame');
}
export function packHeaderAad(storeId: string, packIdHex: string): Buffer {
  return aad(storeId, 'pack', packIdHex);
}

/**
 * Turns new chunks into packs: groups chunks into frames, has the worker pool
 * seal them under the pack's own key, appends sealed frames to the pack, and
 * uploads each pack once it is full and all its frames are back. Memory is
 * bounded by the seal-task and upload limits (backpressure in addChunks).
 */
export class PackWriter {
  private current: OpenPack | undefined;
  private readonly pendingIds = new ChunkIdMap<Buffer>((id) => id);
  private readonly uploads = new Set<Promise<void>>();
  private readonly written: PackHeader[] = [];
  private sealTasks = 0;
  private error: unknown;
  private waiters: (() => void)[] = [];
  private readonly targetPackBytes: number;
  private readonly frameTargetBytes: number;
  private readonly maxUploads: number;
  private readonly maxSealTasks: number;
  bytesStored = 0;
  private readonly aad: Uint8Array;

  constructor(
    private readonly repo: Repository,
    private readonly pool: WorkerPool,
    options: PackWriterOptions = {},
  ) {
    this.targetPackBytes = options.targetPackBytes ?? 16 * 2 ** 20;
    this.frameTargetBytes = Math.max(options.frameTargetBytes ?? 64 * 1024, repo.chunkSizeBytes);
    this.maxUploads = options.maxUploads ?? 3;
    this.maxSealTasks = options.maxSealTasks ?? pool.size * 3;
    this.aad = new Uint8Array(frameAad(repo.config.storeId));
  }

  /** True when this writer already holds the chunk (sealed or on its way). */
  has(id: Buffer): boolean {
    return this.pendingIds.has(id);
  }

  /** Accepts chunks that are new to the store. Resolves when there is room for more. */
  async addChunks(chunks: readonly NewChunk[]): Promise<void> {
    this.throwIfFailed();
    const fresh = chunks.filter((c) => this.pendingIds.add(c.id, 0, c.id));
    for (const frames of this.group(fresh, 1024 * 1024)) {
      const bytes = frames.reduce((n, f) => n + f.reduce((m, c) => m + c.data.length, 0), 0);
      const buffers = frames.map((f) => {
        const joined = f.length === 1 ? Buffer.from((f[0] as NewChunk).data) : Buffer.concat(f.map((c) => c.data));
        return joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.length) as ArrayBuffer;
      });
      this.dispatch(frames, bytes, (pack) => ({ type: 'seal', key: pack.key, aad: this.aad, frames: buffers }), buffers);
    }
    await this.room();
  }

  /**
   * Accepts the new chunks of a batch `worker` hashed and holds. Must be called
   * once for every hashed batch, with no chunks too, so the worker lets go of it.
   */
  async addBatch(batch: { readonly worker: number; readonly batchId: number }, chunks: readonly BatchChunk[]): Promise<void> {
    this.throwIfFailed();
    const fresh = chunks.filter((c) => this.pendingIds.add(c.id, 0, c.id));
    const frames = this.group(fresh, Infinity)[0] ?? [];
    const layout: number[] = [];
    for (const f of frames) {
      layout.push(f.length);
      for (const c of f) layout.push(c.offset, c.length);
    }
    const bytes = fresh.reduce((n, c) => n + c.length, 0);
    const req = (pack: OpenPack): PoolRequest => ({ type: 'seal', key: pack.key, aad: this.aad, batchId: batch.batchId, layout: Uint32Array.from(layout) });
    if (frames.length === 0) {
      // Nothing new in the batch: only tell the worker to let go of it.
      const release: PoolRequest = { type: 'seal', key: new Uint8Array(32), aad: this.aad, batchId: batch.batchId, layout: new Uint32Array(0) };
      void this.pool.run(release, [], batch.worker).catch((err: unknown) => void (this.error ??= err));
    } else this.dispatch(frames, bytes, req, [], batch.worker);
    await this.room();
  }

  /** Frames of at most frameTargetBytes, gathered into tasks of about taskBytes. */
  private group<C extends FrameChunk>(chunks: readonly C[], taskBytes: number): C[][][] {
    const len = chunkLength;
    const tasks: C[][][] = [];
    let task: C[][] = [];
    let taskLen = 0;
    let frame: C[] = [];
    let frameLen = 0;
    for (const c of chunks) {
      if (frameLen + len(c) > this.frameTargetBytes && frame.length > 0) {
        task.push(frame);
        taskLen += frameLen;
        frame = [];
        frameLen = 0;
        if (taskLen >= taskBytes) {
          tasks.push(task);
          task = [];
          taskLen = 0;
        }
      }
      frame.push(c);
      frameLen += len(c);
    }
    if (frame.length > 0) task.push(frame);
    if (task.length > 0) tasks.push(task);
    return tasks;
  }

  private async room(): Promise<void> {
    while (this.sealTasks >= this.maxSealTasks || this.uploads.size >= this.maxUploads) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      this.throwIfFailed();
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private throwIfFailed(): void {
    if (this.error !== undefined) throw this.error;
  }

  private packFor(bytes: number): OpenPack {
    if (!this.current || this.current.plaintextAssigned >= this.targetPackBytes) {
      if (this.current) this.closePack(this.current);
      const id = this.repo.newPackId();
      this.current = {
        id,
        key: new Uint8Array(this.repo.key.packKey(id)),
        plaintextAssigned: 0,
        pendingTasks: 0,
        closed: false,
        parts: [],
        dataBytes: 0,
        frames: [],
        chunks: [],
      };
    }
    this.current.plaintextAssigned += bytes;
    return this.current;
  }

  private dispatch(frames: readonly (readonly FrameChunk[])[], bytes: number, request: (pack: OpenPack) => PoolRequest, transfer: ArrayBuffer[], worker?: number): void {
    const pack = this.packFor(bytes);
    pack.pendingTasks++;
    this.sealTasks++;
    this.pool
      .run(request(pack), transfer, worker)
      .then((res) => {
        if (res.type !== 'seal') throw new LifeboatError('INTERNAL', 'unexpected worker reply');
        split(res.joined, res.lengths).forEach((sealed, i) => {
          const frameIndex = pack.frames.length;
          pack.frames.push({ offset: pack.dataBytes, length: sealed.length });
          pack.parts.push(sealed);
          pack.dataBytes += sealed.length;
          let inner = 0;
          for (const c of frames[i] as FrameChunk[]) {
            const length = chunkLength(c);
            pack.chunks.push({ id: c.id, frame: frameIndex, innerOffset: inner, length });
            inner += length;
          }
        });
        pack.pendingTasks--;
        if (pack.closed && pack.pendingTasks === 0) this.upload(pack);
      })
      .catch((err: unknown) => {
        this.error ??= err;
      })
      .finally(() => {
        this.sealTasks--;
        this.wake();
      });
  }

  private closePack(pack: OpenPack): void {
    pack.closed = true;
    if (pack.pendingTasks === 0) this.upload(pack);
  }

  private upload(pack: OpenPack): void {
    if (pack.chunks.length === 0) return;
    const idHex = pack.id.toString('hex');
    const headerPlainBytes = encodePackHeader({ packId: pack.id, sizeBytes: 0, createdAtMs: 0, frames: pack.frames, chunks: pack.chunks }).length;
    // Sealed without compression, the header's envelope size is known in advance, so the header can state the pack's total size.
    const sizeBytes = pack.dataBytes + ENVELOPE_OVERHEAD + 1 + headerPlainBytes + PACK_TRAILER_BYTES; // +1: the codec byte
    const header: PackHeader = {
      packId: pack.id,
      sizeBytes,
      createdAtMs: this.repo.clock.now().getTime(),
      frames: pack.frames,
      chunks: pack.chunks,
    };
    const sealedHeader = seal(Buffer.from(pack.key), encodePackHeader(header), packHeaderAad(this.repo.config.storeId, idHex), false);
    const body = Buffer.concat([...pack.parts, sealedHeader, encodeTrailer(sealedHeader.length)]);
    if (body.length !== sizeBytes) throw new LifeboatError('INTERNAL', `pack size ${body.length} != computed ${sizeBytes}`);
    pack.parts.length = 0;
    const p = this.repo.storage
      .put(packObjectKey(idHex), body)
      .then(() => {
        this.written.push(header);
        this.bytesStored += body.length;
      })
      .catch((err: unknown) => {
        this.error ??= err;
      })
      .finally(() => {
        this.uploads.delete(p);
        this.wake();
      });
    this.uploads.add(p);
  }

  /** Seals and uploads everything accepted so far; returns the headers of the packs written. */
  async finish(): Promise<PackHeader[]> {
    while (this.sealTasks > 0) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.current) {
      this.closePack(this.current);
      this.current = undefined;
    }
    while (this.uploads.size > 0) await Promise.all([...this.uploads]);
    this.throwIfFailed();
    return [...this.written];
  }
}
