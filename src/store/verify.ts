import { asLifeboatError, LifeboatError, type ErrorCode } from '../core/errors.js';
import { ChunkHasher, CHUNK_ID_BYTES, open } from '../format/crypto.js';
import { isZeroId } from '../format/disk-index.js';
import { DATA_PREFIX, INDEX_PREFIX, packIdFromKey, packKey, parsePointKey, POINTS_PREFIX, KEYS_PREFIX } from '../format/layout.js';
import { decodeIndex, decodePackHeader, decodeTrailer, PACK_TRAILER_BYTES, type PackHeader } from '../format/pack.js';
import { listSegments, pendingRun, readSegment } from './journal.js';
import { frameAad, packHeaderAad } from './pack-writer.js';
import { ChunkIdMap } from './chunk-map.js';
import type { Repository } from './repository.js';
import type { Progress } from './backup.js';

export interface VerifyProblem {
  readonly code: ErrorCode;
  readonly object: string;
  readonly message: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly full: boolean;
  readonly points: number;
  readonly indexObjects: number;
  readonly packs: number;
  readonly segments: number;
  readonly bytesRead: number;
  readonly problems: VerifyProblem[];
  /** Objects no point needs (left by an interrupted writer); gc removes them. */
  readonly unreferencedPacks: number;
}

/**
 * Checks the store without changing it. Always: key slots, every index object,
 * every manifest and point index, that every chunk a point needs is indexed and
 * its pack is present at the indexed size. With `full`: reads every pack and
 * segment, authenticates every frame and header, and re-hashes every chunk, so
 * any flipped or missing byte in stored data is found.
 */
export async function verifyStore(repo: Repository, options: { full?: boolean; onProgress?: (p: Progress) => void } = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const fail = (object: string, err: unknown): void => {
    const e = asLifeboatError(err);
    // The error may name the damaged object more exactly (a point's index rather than its manifest).
    const named = typeof e.details.object === 'string' ? /(?:config|keys\/|data\/|index\/|points\/|journal\/)\S*/.exec(e.details.object)?.[0] : undefined;
    problems.push({ code: e.code, object: named ?? object, message: e.message });
  };
  let bytesRead = 0;

  try {
    await repo.keySlots();
  } catch (err) {
    fail(KEYS_PREFIX, err);
  }

  // Index objects -> pack headers.
  const packs = new Map<string, PackHeader>();
  const chunks = new ChunkIdMap<true>();
  let indexObjects = 0;
  for await (const info of repo.storage.list(INDEX_PREFIX)) {
    indexObjects++;
    try {
      const headers = decodeIndex(await repo.getSealed(info.key), info.key);
      bytesRead += info.sizeBytes;
      for (const h of headers) {
        packs.set(h.packId.toString('hex'), h);
        for (const c of h.chunks) chunks.add(c.id, 0, true);
      }
    } catch (err) {
      fail(info.key, err);
    }
  }

  // Pack objects present, at the size their index states.
  const present = new Map<string, number>();
  for await (const info of repo.storage.list(DATA_PREFIX)) {
    const id = packIdFromKey(info.key);
    if (id) present.set(id, info.sizeBytes);
  }
  for (const [id, h] of packs) {
    const size = present.get(id);
    if (size === undefined) problems.push({ code: 'MISSING_OBJECT', object: packKey(id), message: `pack ${id} is indexed but missing` });
    else if (size !== h.sizeBytes) {
      problems.push({ code: 'CORRUPT_OBJECT', object: packKey(id), message: `pack ${id} has ${size} bytes; its index says ${h.sizeBytes} (truncated?)` });
    }
  }
  const unreferencedPacks = [...present.keys()].filter((id) => !packs.has(id)).length;

  // Points: manifest, index, every chunk indexed.
  let points = 0;
  for await (const info of repo.storage.list(POINTS_PREFIX)) {
    const parsed = parsePointKey(info.key);
    if (parsed?.kind !== 'manifest') continue;
    points++;
    try {
      const manifest = await repo.findPoint(parsed.pointId);
      const index = await repo.readPointIndex(manifest);
      bytesRead += info.sizeBytes;
      let missing = 0;
      for (let o = 0; o < index.ids.length; o += CHUNK_ID_BYTES) {
        if (!isZeroId(index.ids, o) && !chunks.has(index.ids, o)) missing++;
      }
      if (missing > 0) {
        problems.push({ code: 'MISSING_OBJECT', object: info.key, message: `point ${manifest.pointId} needs ${missing} chunks that no index lists` });
      }
    } catch (err) {
      fail(info.key, err);
    }
  }

  // Journal segments (read in full mode only: they are data).
  let segments = 0;
  const disks = new Set<string>();
  for await (const info of repo.storage.list('journal/')) disks.add(info.key.split('/')[1] as string);
  for (const disk of disks) {
    const all = await listSegments(repo, disk);
    const latest = await repo.latestPoint(disk).catch(() => undefined);
    try {
      pendingRun(latest ? latest.source : { generation: all[0]?.generation ?? 0, lastSequence: 0 }, all);
    } catch (err) {
      fail(`journal/${disk}/`, err);
    }
    for (const seg of all) {
      segments++;
      if (!options.full) continue;
      try {
        await readSegment(repo, disk, seg);
        bytesRead += seg.sizeBytes;
      } catch (err) {
        fail(seg.key, err);
      }
    }
  }

  if (options.full) {
    const hasher = new ChunkHasher(repo.key.idKey);
    const total = [...packs.values()].reduce((n, h) => n + h.sizeBytes, 0);
    let done = 0;
    for (const [id, h] of packs) {
      if (!present.has(id)) continue;
      try {
        bytesRead += await verifyPack(repo, h, hasher);
      } catch (err) {
        fail(packKey(id), err);
      }
      done += h.sizeBytes;
      options.onProgress?.({ phase: 'verify', doneBytes: done, totalBytes: total });
    }
  }

  return { ok: problems.length === 0, full: options.full ?? false, points, indexObjects, packs: packs.size, segments, bytesRead, problems, unreferencedPacks };
}

/** Reads a whole pack: trailer, header (must equal the indexed one), every frame, every chunk id. */
async function verifyPack(repo: Repository, indexed: PackHeader, hasher: ChunkHasher): Promise<number> {
  const idHex = indexed.packId.toString('hex');
  const key = packKey(idHex);
  const raw = await repo.storage.get(key);
  const packSecret = repo.key.packKey(indexed.packId);
  const headerLen = decodeTrailer(raw.subarray(raw.length - PACK_TRAILER_BYTES), raw.length, key);
  const headerEnv = raw.subarray(raw.length - PACK_TRAILER_BYTES - headerLen, raw.length - PACK_TRAILER_BYTES);
  const header = decodePackHeader(open(packSecret, headerEnv, packHeaderAad(repo.config.storeId, idHex), `${key} header`), key);
  if (header.sizeBytes !== raw.length || header.chunks.length !== indexed.chunks.length || header.frames.length !== indexed.frames.length) {
    throw new LifeboatError('CORRUPT_OBJECT', `${key} header disagrees with its index entry`, { details: { object: key } });
  }
  const aadBuf = frameAad(repo.config.storeId);
  const plains = header.frames.map((f, i) => open(packSecret, raw.subarray(f.offset, f.offset + f.length), aadBuf, `frame ${i} of ${key}`));
  for (const c of header.chunks) {
    const data = (plains[c.frame] as Buffer).subarray(c.innerOffset, c.innerOffset + c.length);
    if (data.length !== c.length || !hasher.id(data).equals(c.id)) {
      throw new LifeboatError('CORRUPT_OBJECT', `${key}: a chunk does not hash to its id`, { details: { object: key } });
    }
  }
  return raw.length;
}
