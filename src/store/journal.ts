import { LifeboatError, isLifeboatError } from '../core/errors.js';
import { aad, ChunkHasher, CHUNK_ID_BYTES, open, seal } from '../format/crypto.js';
import { chunkCountFor, isZeroId, newDiskIndex, type DiskIndex } from '../format/disk-index.js';
import { parseSegmentKey, segmentKey, segmentsPrefix } from '../format/layout.js';
import type { PointManifest } from '../format/manifest.js';
import { decodeSegment, encodeSegment, type JournalSegment, type SegmentExtent } from '../format/segment.js';
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

/**
 * Stores one journal segment. Create-only: a sequence number is written once;
 * writing it again with other contents is a CONFLICT (a replayed or forked
 * stream), and a generation older than the disk's current one is fenced.
 */
export async function writeSegment(
  repo: Repository,
  disk: string,
  segment: Omit<JournalSegment, 'createdAtMs'>,
): Promise<SegmentInfo> {
  checkDiskName(disk);
  if (!Number.isSafeInteger(segment.sequence) || segment.sequence < 1) throw new LifeboatError('USAGE', 'segment sequence numbers start at 1');
  if (!Number.isInteger(segment.generation) || segment.generation < 0 || segment.generation > 0xffffffff) {
    throw new LifeboatError('USAGE', 'segment generation must be a 32-bit unsigned integer');
  }
  const latest = await repo.latestPoint(disk);
  if (latest && segment.generation < latest.source.generation) {
    throw new LifeboatError('GENERATION_FENCED', `disk ${disk} is at generation ${latest.source.generation}; generation ${segment.generation} is fenced`, {
      details: { disk, generation: segment.generation, current: latest.source.generation },
    });
  }
  const key = segmentKey(disk, segment.generation, segment.sequence);
  const plain = encodeSegment({ ...segment, createdAtMs: repo.clock.now().getTime() });
  const sealed = seal(repo.key.encKey, plain, segmentAad(repo, disk, segment.generation, segment.sequence));
  try {
    await repo.storage.put(key, sealed, { ifNoneMatch: true });
  } catch (err) {
    if (isLifeboatError(err, 'STORAGE_PRECONDITION')) {
      throw new LifeboatError('CONFLICT', `segment ${segment.sequence} of disk ${disk} generation ${segment.generation} already exists`, {
        cause: err,
        retryable: false,
        details: { disk, generation: segment.generation, sequence: segment.sequence },
      });
    }
    throw err;
  }
  return { key, generation: segment.generation, sequence: segment.sequence, sizeBytes: sealed.length };
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

    const segments: JournalSegment[] = [];
    for (const info of run) segments.push(await readSegment(repo, disk, info));
    const cs = repo.chunkSizeBytes;
    const reader = base ? await PointReader.open(repo, base, { workers: 0 }) : undefined;
    const baseIndex = base ? await repo.readPointIndex(base) : undefined;

    // Patch every touched chunk, segment by segment at each segment's own disk size (later writes win).
    // Base bytes are valid only below the smallest size the disk has had since the base point:
    // whatever a shrink cut off reads as zeros if the disk grows again.
    const patched = new Map<number, Buffer>();
    let size = base?.diskSizeBytes ?? (segments[0] as JournalSegment).diskSizeBytes;
    let validBase = reader ? reader.sizeBytes : 0;
    const chunkAt = async (slot: number): Promise<Buffer> => {
      let buf = patched.get(slot);
      if (buf) return buf;
      const start = slot * cs;
      buf = Buffer.alloc(Math.min(cs, size - start));
      const fromBase = Math.min(buf.length, validBase - start);
      if (reader && fromBase > 0) (await reader.read(start, fromBase)).copy(buf);
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
    let newChunks = 0;
    for (const [slot, data] of [...patched.entries()].sort((a, b) => a[0] - b[0])) {
      const target = index.ids.subarray(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES);
      if (data.every((b) => b === 0)) {
        target.fill(0);
        continue;
      }
      const id = hasher.id(data);
      id.copy(target);
      if (!known.has(id) && !writer.has(id) && !fresh.some((c) => c.id.equals(id))) {
        fresh.push({ id, data });
        newChunks++;
      }
    }
    await writer.addChunks(fresh);
    const written = await writer.finish();
    if (written.length > 0) await repo.writeIndex(written);
    await lock.check();
    const last = segments[segments.length - 1] as JournalSegment;
    let zeroChunks = 0;
    for (let o = 0; o < index.ids.length; o += CHUNK_ID_BYTES) if (isZeroId(index.ids.subarray(o, o + CHUNK_ID_BYTES))) zeroChunks++;
    return await repo.commitPoint(index, {
      disk,
      diskSizeBytes: size,
      chunkSizeBytes: cs,
      consistency: options.consistency ?? 'crash',
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
