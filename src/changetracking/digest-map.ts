import { Blake3Hasher, blake3 } from '@napi-rs/blake-hash';
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { LifeboatError } from '../core/errors.js';
import { fsyncDir, writeFileDurable } from '../io/durable.js';

/**
 * The digest map of one disk (docs/replication.md, "Change tracking and the
 * digest map"): per 4 KiB chunk, the 128-bit BLAKE3 (unkeyed, truncated) of
 * the content the replica holds. Two reserved values: all zero bytes means a
 * zero chunk (every all-zero chunk maps to it, whatever its length), all 0xFF
 * means unknown (it never equals a computed digest, so the chunk is reported).
 *
 * Files in `dir` (the agent's state directory of the disk):
 * - `map.json` — `{ version: 1, chunkBytes: 4096, sizeBytes }`, replaced
 *   atomically (temp, fsync, rename, directory fsync). No map.json: no map yet
 *   (first start); every chunk reads as `absent` says: unknown (default), or
 *   zero when the caller knows the replica is a new, all-zero disk (then a
 *   first compare ships only the non-zero chunks).
 * - `digests.v1` — entry i (16 bytes) at byte 16·i, for the chunks of
 *   `sizeBytes`; bytes past them are ignored. Read and written with
 *   pread/pwrite, never held whole in memory (1 TiB of disk = 4 GiB of map).
 * - `pending-<cutId>.v1` — the digests a cut staged, sealed (written to
 *   `.tmp`, fsynced, renamed). Applying one writes its entries in place and
 *   fsyncs the map before the pending file is removed, so a crash while
 *   applying is repaired by applying it again: applying is idempotent.
 *
 * Pending file, little endian: header `"LBDP" | u32 version=1 | u64 sizeBytes
 * | u32 chunkBytes=4096 | u32 0`, then records `u64 firstChunk | u32 count |
 * count × 16 bytes`, then the trailer `u64 0xFFFF_FFFF_FFFF_FFFF | u32
 * recordCount | 16 bytes: BLAKE3-128 of everything before the trailer`.
 *
 * One process uses a map at a time (the agent holds its state directory).
 */

export const CHUNK_BYTES = 4096;
export const DIGEST_BYTES = 16;
/** The digest of every all-zero chunk. */
export const ZERO_DIGEST: Buffer = Buffer.alloc(DIGEST_BYTES, 0);
/** "The replica's content is not known": differs from every computed digest. */
export const UNKNOWN_DIGEST: Buffer = Buffer.alloc(DIGEST_BYTES, 0xff);

const MAP_VERSION = 1;
const META_FILE = 'map.json';
const MAP_FILE = 'digests.v1';
const PENDING_PREFIX = 'pending-';
const PENDING_SUFFIX = '.v1';
const PENDING_MAGIC = 0x5044424c; // "LBDP" read as u32 LE
const PENDING_HEADER_BYTES = 24;
const RECORD_HEADER_BYTES = 12;
const TRAILER_BYTES = 28;
const TRAILER_MARK = 0xffff_ffff_ffff_ffffn;
const CUT_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** Unknown entries written per pwrite when a map grows. */
const FILL_ENTRIES = 65536;

const ZERO_CHUNK = Buffer.alloc(CHUNK_BYTES, 0);

/** Number of chunks of a disk of `sizeBytes` (the last may be partial). */
export function chunkCount(sizeBytes: number): number {
  return Math.ceil(sizeBytes / CHUNK_BYTES);
}

function isZero(data: Uint8Array): boolean {
  if (data.length === CHUNK_BYTES) return ZERO_CHUNK.equals(data);
  return ZERO_CHUNK.subarray(0, data.length).equals(data);
}

/**
 * The digest of one chunk's content (≤ 4096 bytes), written into `out` at
 * `outOffset`. A non-zero chunk whose hash truncates to a reserved value
 * (probability 2^-127) would be mistaken for it; we accept that, like any
 * 128-bit content address.
 */
export function chunkDigestInto(data: Uint8Array, out: Buffer, outOffset: number): void {
  if (isZero(data)) {
    out.fill(0, outOffset, outOffset + DIGEST_BYTES);
    return;
  }
  blake3(data).copy(out, outOffset, 0, DIGEST_BYTES);
}

export function chunkDigest(data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(DIGEST_BYTES);
  chunkDigestInto(data, out, 0);
  return out;
}

function checkCutId(cutId: string): void {
  if (!CUT_ID.test(cutId)) {
    throw new LifeboatError('INTERNAL', `cut id ${JSON.stringify(cutId)} is not 1-64 characters of [A-Za-z0-9_-]`);
  }
}

function trackerError(message: string, err: unknown, details: Record<string, unknown>): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return new LifeboatError('TRACKER_FAILED', `${message}: ${code ?? (err as Error)?.message ?? String(err)}`, { cause: err, details });
}

async function writeAllAt(h: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await h.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

/** Reads up to buf.length bytes at position; returns how many were read (short only at end of file). */
async function readAt(h: FileHandle, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await h.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

interface Meta {
  readonly version: number;
  readonly chunkBytes: number;
  readonly sizeBytes: number;
}

function pendingName(cutId: string): string {
  return `${PENDING_PREFIX}${cutId}${PENDING_SUFFIX}`;
}

export interface DigestMapOptions {
  /** What the replica is taken to hold while there is no map yet: 'unknown' (default) or 'zero' (a new, empty replica). */
  readonly absent?: 'unknown' | 'zero';
}

export class DigestMap {
  private constructor(
    readonly dir: string,
    private readonly handle: FileHandle,
    private size: number,
    private present: boolean,
    private readonly absentFill: number,
  ) {}

  /**
   * Opens (creating the directory if needed) the map in `dir`. Leftover
   * `.tmp` files of interrupted writes are removed; sealed pending files stay
   * until applied or dropped.
   */
  static async open(dir: string, options: DigestMapOptions = {}): Promise<DigestMap> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      for (const name of await readdir(dir)) {
        if (name.endsWith('.tmp')) await rm(join(dir, name), { force: true });
      }
      let meta: Meta | null = null;
      try {
        meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8')) as Meta;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      if (meta && (meta.version !== MAP_VERSION || meta.chunkBytes !== CHUNK_BYTES || !Number.isSafeInteger(meta.sizeBytes) || meta.sizeBytes < 0)) {
        throw new LifeboatError('TRACKER_FAILED', `digest map ${dir}/${META_FILE} has an unsupported version or a bad size`, {
          details: { dir, meta },
        });
      }
      const handle = await open(join(dir, MAP_FILE), 'a+', 0o600).then(async (h) => {
        // 'a+' creates the file; reopen without O_APPEND so pwrite honours positions.
        await h.close();
        return open(join(dir, MAP_FILE), 'r+');
      });
      return new DigestMap(dir, handle, meta?.sizeBytes ?? 0, meta !== null, options.absent === 'zero' ? 0 : 0xff);
    } catch (err) {
      throw trackerError(`cannot open the digest map in ${dir}`, err, { dir });
    }
  }

  /** False until the first cut was applied: the map knows nothing (first start). */
  get exists(): boolean {
    return this.present;
  }

  /** The disk size the map describes. */
  get sizeBytes(): number {
    return this.size;
  }

  get chunkCount(): number {
    return chunkCount(this.size);
  }

  /**
   * `count` entries from chunk `firstChunk` (16 bytes each); entries past the
   * map are UNKNOWN_DIGEST, and all are the `absent` value while no map exists.
   */
  async read(firstChunk: number, count: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(count * DIGEST_BYTES);
    if (!this.present) return out.fill(this.absentFill);
    const known = Math.max(0, Math.min(count, this.chunkCount - firstChunk));
    let got = 0;
    if (known > 0) {
      try {
        got = await readAt(this.handle, out.subarray(0, known * DIGEST_BYTES), firstChunk * DIGEST_BYTES);
      } catch (err) {
        throw trackerError(`cannot read the digest map in ${this.dir}`, err, { dir: this.dir });
      }
    }
    out.fill(0xff, got);
    return out;
  }

  /**
   * Starts staging the digests of cut `cutId` of a disk of `sizeBytes`.
   * Nothing is visible to apply() until the returned writer is sealed.
   */
  async stage(cutId: string, sizeBytes: number): Promise<PendingDigests> {
    checkCutId(cutId);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new LifeboatError('INTERNAL', `bad disk size ${sizeBytes}`);
    const tmp = join(this.dir, `${pendingName(cutId)}.tmp`);
    try {
      const h = await open(tmp, 'w', 0o600);
      return new PendingDigests(cutId, this.dir, h, tmp, sizeBytes);
    } catch (err) {
      throw trackerError(`cannot stage digests in ${this.dir}`, err, { dir: this.dir, cutId });
    }
  }

  /** The cut ids with a sealed pending file, oldest name first. */
  async pending(): Promise<string[]> {
    try {
      return (await readdir(this.dir))
        .filter((n) => n.startsWith(PENDING_PREFIX) && n.endsWith(PENDING_SUFFIX))
        .map((n) => n.slice(PENDING_PREFIX.length, -PENDING_SUFFIX.length))
        .sort();
    } catch (err) {
      throw trackerError(`cannot list pending digests in ${this.dir}`, err, { dir: this.dir });
    }
  }

  /**
   * Writes the sealed pending digests of `cutId` into the map, fsyncs it, then
   * removes the pending file. Idempotent: applying again after a crash at any
   * point gives the same map; a cut with no pending file (applied and removed
   * already) is a no-op. Returns whether a pending file was applied.
   */
  async apply(cutId: string): Promise<boolean> {
    checkCutId(cutId);
    const path = join(this.dir, pendingName(cutId));
    let h: FileHandle;
    try {
      h = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw trackerError(`cannot open pending digests ${path}`, err, { path });
    }
    try {
      const sizeBytes = await verifyPending(h, path);
      await this.resize(sizeBytes);
      const count = this.chunkCount;
      await forEachRecord(h, path, async (firstChunk, digests) => {
        const n = digests.length / DIGEST_BYTES;
        if (firstChunk + n > count) {
          throw new LifeboatError('TRACKER_FAILED', `pending digests ${path} name chunks past the disk's end`, { details: { path } });
        }
        await writeAllAt(this.handle, digests, firstChunk * DIGEST_BYTES);
      });
      await this.handle.sync();
    } catch (err) {
      throw trackerError(`cannot apply pending digests ${path}`, err, { path });
    } finally {
      await h.close();
    }
    await this.drop(cutId);
    return true;
  }

  /** Forgets the pending digests of `cutId` (sealed or not). Idempotent. */
  async drop(cutId: string): Promise<void> {
    checkCutId(cutId);
    try {
      await rm(join(this.dir, pendingName(cutId)), { force: true });
      await rm(join(this.dir, `${pendingName(cutId)}.tmp`), { force: true });
      await fsyncDir(this.dir);
    } catch (err) {
      throw trackerError(`cannot drop pending digests of cut ${cutId}`, err, { dir: this.dir, cutId });
    }
  }

  /**
   * Makes the map describe a disk of `sizeBytes`: new chunks are unknown, and a
   * partial last chunk whose length changes becomes unknown; the first resize
   * of a map that did not exist fills it with the `absent` value. Durable when
   * it returns. Idempotent (the same size is a no-op).
   */
  async resize(sizeBytes: number): Promise<void> {
    if (this.present && sizeBytes === this.size) return;
    const oldSize = this.present ? this.size : 0;
    const oldCount = chunkCount(oldSize);
    const newCount = chunkCount(sizeBytes);
    try {
      const unknown: number[] = [];
      if (oldSize % CHUNK_BYTES !== 0 && oldCount - 1 < newCount) unknown.push(oldCount - 1);
      if (sizeBytes % CHUNK_BYTES !== 0 && newCount - 1 < oldCount) unknown.push(newCount - 1);
      for (const i of unknown) await writeAllAt(this.handle, UNKNOWN_DIGEST, i * DIGEST_BYTES);
      if (newCount > oldCount) {
        // Written out, never left to ftruncate: a file's zero bytes would read as zero chunks.
        const fill = Buffer.alloc(Math.min(newCount - oldCount, FILL_ENTRIES) * DIGEST_BYTES, this.present ? 0xff : this.absentFill);
        for (let i = oldCount; i < newCount; i += FILL_ENTRIES) {
          const n = Math.min(FILL_ENTRIES, newCount - i);
          await writeAllAt(this.handle, fill.subarray(0, n * DIGEST_BYTES), i * DIGEST_BYTES);
        }
      }
      await this.handle.sync();
      const meta: Meta = { version: MAP_VERSION, chunkBytes: CHUNK_BYTES, sizeBytes };
      await writeFileDurable(this.dir, META_FILE, `${JSON.stringify(meta)}\n`);
      this.size = sizeBytes;
      this.present = true;
      // Entries past the new end are ignored; truncating only saves space.
      if (newCount < oldCount) await this.handle.truncate(newCount * DIGEST_BYTES);
    } catch (err) {
      throw trackerError(`cannot resize the digest map in ${this.dir}`, err, { dir: this.dir, sizeBytes });
    }
  }

  async close(): Promise<void> {
    try {
      await this.handle.close();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBADF') throw err;
    }
  }
}

/** The staged digests of one cut, appended in any order of chunks; sealed once. */
export class PendingDigests {
  private buf = Buffer.allocUnsafe(1 << 20);
  private used = 0;
  private position = 0;
  private records = 0;
  private readonly hasher = new Blake3Hasher();
  private done = false;

  constructor(
    readonly cutId: string,
    private readonly dir: string,
    private readonly handle: FileHandle,
    private readonly tmpPath: string,
    readonly sizeBytes: number,
  ) {
    const header = Buffer.alloc(PENDING_HEADER_BYTES);
    header.writeUInt32LE(PENDING_MAGIC, 0);
    header.writeUInt32LE(1, 4);
    header.writeBigUInt64LE(BigInt(sizeBytes), 8);
    header.writeUInt32LE(CHUNK_BYTES, 16);
    this.put(header);
  }

  /** Stages `digests` (16 bytes per chunk) for chunks from `firstChunk`. */
  async add(firstChunk: number, digests: Buffer): Promise<void> {
    if (this.done) throw new LifeboatError('INTERNAL', `pending digests of cut ${this.cutId} are sealed already`);
    if (digests.length === 0) return;
    if (digests.length % DIGEST_BYTES !== 0) throw new LifeboatError('INTERNAL', 'digests must be 16 bytes each');
    const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
    head.writeBigUInt64LE(BigInt(firstChunk), 0);
    head.writeUInt32LE(digests.length / DIGEST_BYTES, 8);
    this.records++;
    await this.append(head);
    await this.append(digests);
  }

  /** Makes the staged digests durable and visible to DigestMap.apply(). */
  async seal(): Promise<void> {
    if (this.done) return;
    const trailer = Buffer.allocUnsafe(TRAILER_BYTES);
    trailer.writeBigUInt64LE(TRAILER_MARK, 0);
    trailer.writeUInt32LE(this.records, 8);
    await this.flush();
    this.hasher.digestBuffer().copy(trailer, 12, 0, DIGEST_BYTES);
    try {
      await writeAllAt(this.handle, trailer, this.position);
      await this.handle.sync();
      await this.handle.close();
      this.done = true;
      await rename(this.tmpPath, join(this.dir, pendingName(this.cutId)));
      await fsyncDir(this.dir);
    } catch (err) {
      throw trackerError(`cannot seal pending digests of cut ${this.cutId}`, err, { dir: this.dir, cutId: this.cutId });
    }
  }

  /** Abandons an unsealed staging. Idempotent. */
  async discard(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.handle.close().catch(() => undefined);
    }
    await rm(this.tmpPath, { force: true });
  }

  private put(data: Buffer): void {
    data.copy(this.buf, this.used);
    this.used += data.length;
  }

  private async append(data: Buffer): Promise<void> {
    if (this.used + data.length > this.buf.length) await this.flush();
    if (data.length > this.buf.length) {
      this.hasher.update(data);
      await this.write(data);
      return;
    }
    this.put(data);
  }

  private async flush(): Promise<void> {
    if (this.used === 0) return;
    const chunk = this.buf.subarray(0, this.used);
    this.hasher.update(chunk);
    await this.write(chunk);
    this.used = 0;
  }

  private async write(data: Buffer): Promise<void> {
    try {
      await writeAllAt(this.handle, data, this.position);
    } catch (err) {
      throw trackerError(`cannot stage digests of cut ${this.cutId}`, err, { dir: this.dir, cutId: this.cutId });
    }
    this.position += data.length;
  }
}

const STREAM_BYTES = 1 << 20;

/** Checks header, trailer and checksum of a sealed pending file; returns its disk size. */
async function verifyPending(h: FileHandle, path: string): Promise<number> {
  const bad = (why: string) => new LifeboatError('TRACKER_FAILED', `pending digests ${path} are damaged: ${why}`, { details: { path } });
  const { size } = await h.stat();
  if (size < PENDING_HEADER_BYTES + TRAILER_BYTES) throw bad('too short');
  const header = Buffer.allocUnsafe(PENDING_HEADER_BYTES);
  await readAt(h, header, 0);
  if (header.readUInt32LE(0) !== PENDING_MAGIC || header.readUInt32LE(4) !== 1 || header.readUInt32LE(16) !== CHUNK_BYTES) {
    throw bad('unknown header');
  }
  const trailer = Buffer.allocUnsafe(TRAILER_BYTES);
  await readAt(h, trailer, size - TRAILER_BYTES);
  if (trailer.readBigUInt64LE(0) !== TRAILER_MARK) throw bad('no trailer');
  const hasher = new Blake3Hasher();
  const buf = Buffer.allocUnsafe(STREAM_BYTES);
  for (let pos = 0; pos < size - TRAILER_BYTES; ) {
    const n = await readAt(h, buf.subarray(0, Math.min(STREAM_BYTES, size - TRAILER_BYTES - pos)), pos);
    hasher.update(buf.subarray(0, n));
    pos += n;
  }
  if (!hasher.digestBuffer().subarray(0, DIGEST_BYTES).equals(trailer.subarray(12))) throw bad('checksum mismatch');
  return Number(header.readBigUInt64LE(8));
}

/** Calls `fn` for each record of a verified pending file, in file order. */
async function forEachRecord(h: FileHandle, path: string, fn: (firstChunk: number, digests: Buffer) => Promise<void>): Promise<void> {
  const { size } = await h.stat();
  const end = size - TRAILER_BYTES;
  const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
  for (let pos = PENDING_HEADER_BYTES; pos < end; ) {
    if ((await readAt(h, head, pos)) !== RECORD_HEADER_BYTES) break;
    const firstChunk = Number(head.readBigUInt64LE(0));
    const count = head.readUInt32LE(8);
    const bytes = count * DIGEST_BYTES;
    if (pos + RECORD_HEADER_BYTES + bytes > end) {
      throw new LifeboatError('TRACKER_FAILED', `pending digests ${path} are damaged: a record runs past the trailer`, { details: { path } });
    }
    const digests = Buffer.allocUnsafe(bytes);
    await readAt(h, digests, pos + RECORD_HEADER_BYTES);
    await fn(firstChunk, digests);
    pos += RECORD_HEADER_BYTES + bytes;
  }
}
