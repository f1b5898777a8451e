import { LifeboatError, isLifeboatError } from '../core/errors.js';
import { aad, ChunkHasher, CHUNK_ID_BYTES, open, seal } from '../format/crypto.js';
import { chunkCountFor, isZeroId, newDiskIndex, type DiskIndex } from '../format/disk-index.js';
import { parseSegmentKey, segmentKey, segmentsPrefix } from '../format/layout.js';
import type { PointManifest } from '../format/manifest.js';
import { decodeSegment, encodeSegment, SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL, type JournalSegment, type SegmentExtent } from '../format/segment.js';
import { DiskLock } from './disk-lock.js';
import { PackWriter, type NewChunk } from './pack-writer.js';
import { PointReader } from './point-reader.js';
import { checkDiskName, type Repository } from './repository.js';
import { WorkerPool } from './worker-pool.js';

export interface SegmentInfo {
  readonly key: string;
  readonly generation: number;
  readonly sequence: number;
  readonly sizeBytes: number;
}

function segmentAad(repo: Repository, disk: string, generation: number, sequence: number): Buffer {
  return aad(repo.config.storeId, 'segment', disk, String(generation), String(sequence));
}

export type NewSegment = Omit<JournalSegment, 'createdAtMs'> & { readonly createdAtMs?: number };

function checkSegmentNumbers(segment: { generation: number; sequence: number }): void {
  if (!Number.isSafeInteger(segment.sequence) || segment.sequence < 1) throw new LifeboatError('USAGE', 'segment sequence numbers start at 1');
  if (!Number.isInteger(segment.generation) || segment.generation < 0 || segment.generation > 0xffffffff) {
    throw new LifeboatError('USAGE', 'segment generation must be a 32-bit unsigned integer');
  }
}

/**
 * Encodes, compresses and seals a segment: pure CPU work with no storage access,
 * so a process server can run it on worker threads (it needs only the store id
 * and the encryption key, `repo.config.storeId` and `repo.key.encKey`).
 */
export function sealSegment(storeId: string, encKey: Buffer, disk: string, segment: JournalSegment): Buffer {
  checkDiskName(disk);
  checkSegmentNumbers(segment);
  return seal(encKey, encodeSegment(segment), aad(storeId, 'segment', disk, String(segment.generation), String(segment.sequence)));
}

/**
 * Stores one sealed segment (from sealSegment). Create-only: a sequence number is
 * written once; writing it again is a CONFLICT (a replayed or forked stream), and
 * a generation older than the disk's newest point is fenced (GENERATION_FENCED).
 */
export async function putSealedSegment(repo: Repository, disk: string, generation: number, sequence: number, sealed: Buffer): Promise<SegmentInfo> {
  checkDiskName(disk);
  checkSegmentNumbers({ generation, sequence });
  const latest = await repo.latestPoint(disk);
  if (latest && generation < latest.source.generation) {
    throw new LifeboatError('GENERATION_FENCED', `disk ${disk} is at generation ${latest.source.generation}; generation ${generation} is fenced`, {
      details: { disk, generation, current: latest.source.generation },
    });
  }
  const key = segmentKey(disk, generation, sequence);
  try {
    await repo.storage.put(key, sealed, { ifNoneMatch: true });
  } catch (err) {
    if (isLifeboatError(err, 'STORAGE_PRECONDITION')) {
      throw new LifeboatError('CONFLICT', `segment ${sequence} of disk ${disk} generation ${generation} already exists`, {
        cause: err,
        retryable: false,
        details: { disk, generation, sequence },
      });
    }
    throw err;
  }
  return { key, generation, sequence, sizeBytes: sealed.length };
}

/**
 * Seals and stores one journal segment (sealSegment + putSealedSegment). Without
 * `createdAtMs` the capture time is the repository clock's now.
 */
export async function writeSegment(repo: Repository, disk: string, segment: NewSegment): Promise<SegmentInfo> {
  const full: JournalSegment = { ...segment, createdAtMs: segment.createdAtMs ?? repo.clock.now().getTime() };
  const sealed = sealSegment(repo.config.storeId, repo.key.encKey, disk, full);
  return putSealedSegment(repo, disk, segment.generation, segment.sequence, sealed);
}

export async function listSegments(repo: Repository, disk: string, generation?: number): Promise<SegmentInfo[]> {
  checkDiskName(disk);
  const out: SegmentInfo[] = [];
  for await (const info of repo.storage.list(segmentsPrefix(disk, generation))) {
    const parsed = parseSegmentKey(info.key);
    if (parsed) out.push({ key: info.key, generation: parsed.generation, sequence: parsed.sequence, sizeBytes: info.sizeBytes });
  }
  return out.sort((a, b) => a.generation - b.generation || a.sequence - b.sequence);
}

export async function readSegment(repo: Repository, disk: string, info: SegmentInfo): Promise<JournalSegment> {
  let raw: Buffer;
  try {
    raw = await repo.storage.get(info.key);
  } catch (err) {
    if (isLifeboatError(err, 'NOT_FOUND')) {
      throw new LifeboatError('JOURNAL_GAP', `segment ${info.sequence} of disk ${disk} vanished`, { cause: err, details: { disk, missing: [info.sequence] } });
    }
    throw err;
  }
  const seg = decodeSegment(open(repo.key.encKey, raw, segmentAad(repo, disk, info.generation, info.sequence), info.key), info.key);
  if (seg.generation !== info.generation || seg.sequence !== info.sequence) {
    throw new LifeboatError('CORRUPT_OBJECT', `${info.key} holds segment ${seg.generation}/${seg.sequence}`, { details: { object: info.key } });
  }
  return seg;
}

/**
 * The segments to fold after `base`: the contiguous run of its generation after
 * its last sequence. A missing number followed by a present one is a gap, and
 * nothing is processed past it.
 */
export function pendingRun(base: { generation: number; lastSequence: number }, segments: SegmentInfo[]): SegmentInfo[] {
  const same = segments.filter((s) => s.generation === base.generation && s.sequence > base.lastSequence);
  const run: SegmentInfo[] = [];
  let expect = base.lastSequence + 1;
  for (const s of same) {
    if (s.sequence !== expect) {
      const missing: number[] = [];
      for (let q = expect; q < s.sequence && missing.length < 20; q++) missing.push(q);
      throw new LifeboatError('JOURNAL_GAP', `journal of generation ${base.generation} is missing sequence ${missing.join(', ')}${s.sequence - expect > 20 ? ', ...' : ''} before ${s.sequence}`, {
        details: { generation: base.generation, expected: expect, found: s.sequence, missing },
      });
    }
    run.push(s);
    expect++;
  }
  return run;
}

export interface ProcessOptions {
  /** Overrides the consistency the segments' flags give (for hand-made journals). */
  readonly consistency?: 'crash' | 'app';
  /** Fold at most up to this sequence number. */
  readonly upToSequence?: number;
  readonly breakLock?: boolean;
}

/**
 * Applies the pending journal segments of `disk` to its newest point and
 * commits the result as a new point, without reading the source disk. Chunks
 * touched by the extents are rebuilt from the base point and patched; all
 * others keep their ids. With nothing pending it returns undefined.
 *
 * Cuts: the run stops at the end of the last complete cut (a cut still missing
 * segments flagged SEGMENT_PARTIAL waits), and at the first app-consistent cut
 * end, so that point is made alone and marked `app`; call again for the rest.
 */
export async function processJournal(repo: Repository, disk: string, options: ProcessOptions = {}): Promise<PointManifest | undefined> {
  checkDiskName(disk);
  const lock = await DiskLock.acquire(repo, disk, 'journal-process', { breakLock: options.breakLock });
  let pool: WorkerPool | undefined;
  try {
    const base = await repo.latestPoint(disk);
    const all = await listSegments(repo, disk);
    let position = base ? base.source : { generation: all[0]?.generation ?? 0, lastSequence: 0 };
    // A newer generation starts afresh at sequence 1 once the old one has nothing pending.
    if (base && !all.some((s) => s.generation === position.generation && s.sequence > position.lastSequence)) {
      const newer = all.find((s) => s.generation > position.generation);
      if (newer) position = { generation: newer.generation, lastSequence: 0 };
    }
    let run = pendingRun(position, all);
    if (options.upToSequence !== undefined) run = run.filter((s) => s.sequence <= options.upToSequence!);
    if (run.length === 0) return undefined;

    const read: JournalSegment[] = [];
    for (const info of run) read.push(await readSegment(repo, disk, info));
    const { apply: segments, last } = completeCuts(read);
    if (!last) return undefined;
    const cs = repo.chunkSizeBytes;
    const reader = base ? await PointReader.open(repo, base, { workers: 0 }) : undefined;
    const baseIndex = base ? await repo.readPointIndex(base) : undefined;

    // Patch every touched chunk, segment by segment at each segment's own disk size (later writes win).
    // Base bytes are valid only below the smallest size the disk has had since the base point:
    // whatever a shrink cut off reads as zeros if the disk grows again.
    const patched = new Map<number, Buffer>();
    let size = base?.diskSizeBytes ?? (segments[0] as JournalSegment).diskSizeBytes;
    let validBase = reader ? reader.sizeBytes : 0;
    // A chunk some extent overwrites whole needs nothing of the base (whatever the order of
    // the writes): the common case of block-aligned writes reads no base data at all.
    // Counted only while the disk keeps the base's size; a resize takes the general path.
    const overwritten = segments.every((seg) => seg.diskSizeBytes === size) ? wholeChunks(segments, cs, size) : new Set<number>();
    const chunkAt = async (slot: number): Promise<Buffer> => {
      let buf = patched.get(slot);
      if (buf) return buf;
      const start = slot * cs;
      buf = Buffer.alloc(Math.min(cs, size - start));
      const fromBase = Math.min(buf.length, validBase - start);
      if (reader && fromBase > 0 && !overwritten.has(slot)) (await reader.read(start, fromBase)).copy(buf);
      patched.set(slot, buf);
      return buf;
    };
    const resize = async (next: number): Promise<void> => {
      if (next === size) return;
      const boundary = Math.min(size, next);
      // The chunk the old or new end cuts through is rebuilt at its new length.
      if (boundary % cs !== 0) await chunkAt(Math.floor(boundary / cs));
      for (const slot of [...patched.keys()]) {
        const start = slot * cs;
        if (start >= next) {
          patched.delete(slot);
          continue;
        }
        const buf = patched.get(slot) as Buffer;
        const want = Math.min(cs, next - start);
        if (buf.length !== want) {
          const resized = Buffer.alloc(want);
          buf.copy(resized, 0, 0, Math.min(want, Math.max(0, boundary - start)));
          patched.set(slot, resized);
        }
      }
      validBase = Math.min(validBase, next);
      size = next;
    };
    let bytesApplied = 0;
    for (const seg of segments) {
      await resize(seg.diskSizeBytes);
      for (const e of seg.extents) await applyExtent(e, cs, size, chunkAt);
      bytesApplied += seg.extents.reduce((n, e) => n + e.data.length, 0);
    }
    const index = resizedIndex(baseIndex, size, cs, validBase);

    const hasher = new ChunkHasher(repo.key.idKey);
    const known = await repo.chunkIndex();
    pool = new WorkerPool(repo.key.idKey, 1);
    const writer = new PackWriter(repo, pool);
    const fresh: NewChunk[] = [];
    const freshIds = new Set<string>();
    let newChunks = 0;
    for (const [slot, data] of [...patched.entries()].sort((a, b) => a[0] - b[0])) {
      const target = index.ids.subarray(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES);
      if (data.every((b) => b === 0)) {
        target.fill(0);
        continue;
      }
      const id = hasher.id(data);
      id.copy(target);
      const hex = id.toString('hex');
      if (!known.has(id) && !writer.has(id) && !freshIds.has(hex)) {
        freshIds.add(hex);
        fresh.push({ id, data });
        newChunks++;
      }
    }
    await writer.addChunks(fresh);
    const written = await writer.finish();
    if (written.length > 0) await repo.writeIndex(written);
    await lock.check();
    const app = ((last.flags ?? 0) & SEGMENT_APP_CONSISTENT) !== 0;
    let zeroChunks = 0;
    for (let o = 0; o < index.ids.length; o += CHUNK_ID_BYTES) if (isZeroId(index.ids.subarray(o, o + CHUNK_ID_BYTES))) zeroChunks++;
    return await repo.commitPoint(index, {
      disk,
      diskSizeBytes: size,
      chunkSizeBytes: cs,
      consistency: options.consistency ?? (app ? 'app' : 'crash'),
      capturedAt: new Date(last.createdAtMs).toISOString(),
      parentPointId: base?.pointId ?? null,
      source: { generation: last.generation, lastSequence: last.sequence },
      origin: 'journal',
      stats: { dataChunks: index.ids.length / CHUNK_ID_BYTES - zeroChunks, zeroChunks, newChunks, bytesRead: bytesApplied, bytesStored: writer.bytesStored },
    });
  } finally {
    await pool?.close();
    await lock.release();
  }
}

/**
 * Splits a contiguous run into whole cuts: `apply` holds the segments of the cuts
 * that ended, up to the end of the first app-consistent cut or else of the last
 * one; `last` is the segment the point ends at (undefined: no cut ended yet).
 * Segments of a cut abandoned unfinished (a new cut began before it ended) are
 * folded past but never applied.
 */
function completeCuts(segments: readonly JournalSegment[]): { apply: JournalSegment[]; last: JournalSegment | undefined } {
  const apply: JournalSegment[] = [];
  let open: JournalSegment[] = [];
  let last: JournalSegment | undefined;
  for (const seg of segments) {
    const flags = seg.flags ?? 0;
    if ((flags & SEGMENT_CONTINUES) === 0) open = []; // a new cut begins; an unfinished one is abandoned
    open.push(seg);
    if ((flags & SEGMENT_PARTIAL) !== 0) continue;
    apply.push(...open);
    open = [];
    last = seg;
    if ((flags & SEGMENT_APP_CONSISTENT) !== 0) break;
  }
  return { apply, last };
}

/** The chunk slots that at least one extent covers whole (at disk size `size`). */
function wholeChunks(segments: readonly JournalSegment[], cs: number, size: number): Set<number> {
  const out = new Set<number>();
  for (const seg of segments) {
    for (const e of seg.extents) {
      const end = e.offset + e.data.length;
      for (let slot = Math.ceil(e.offset / cs); slot * cs < end; slot++) {
        if (Math.min(slot * cs + cs, size) <= end) out.add(slot);
      }
    }
  }
  return out;
}

async function applyExtent(e: SegmentExtent, cs: number, size: number, chunkAt: (slot: number) => Promise<Buffer>): Promise<void> {
  if (e.offset + e.data.length > size) throw new LifeboatError('CORRUPT_OBJECT', 'a journal extent ends past the disk');
  let pos = e.offset;
  const end = e.offset + e.data.length;
  while (pos < end) {
    const slot = Math.floor(pos / cs);
    const chunk = await chunkAt(slot);
    const within = pos - slot * cs;
    const n = Math.min(end - pos, chunk.length - within);
    e.data.copy(chunk, within, pos - e.offset, pos - e.offset + n);
    pos += n;
  }
}

/**
 * The base index adapted to the final disk size: ids are kept only for chunks
 * wholly below `validBase` (the smallest size since the base point); the rest
 * read as zeros unless the journal patched them.
 */
function resizedIndex(base: DiskIndex | undefined, size: number, cs: number, validBase: number): DiskIndex {
  const index = newDiskIndex(size, cs);
  if (base) {
    // A partial chunk at validBase is either the base's own last chunk or was rebuilt (patched) by resize().
    const keep = Math.min(chunkCountFor(size, cs), chunkCountFor(validBase, cs), chunkCountFor(base.diskSizeBytes, cs));
    base.ids.copy(index.ids, 0, 0, keep * CHUNK_ID_BYTES);
  }
  return index;
}
