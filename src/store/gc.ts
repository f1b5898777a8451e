import { CHUNK_ID_BYTES } from '../format/crypto.js';
import { isZeroId } from '../format/disk-index.js';
import { DATA_PREFIX, INDEX_PREFIX, LOCKS_PREFIX, packIdFromKey, packKey, parsePointKey, POINTS_PREFIX } from '../format/layout.js';
import { decodeIndex, type PackHeader } from '../format/pack.js';
import { activeLocks, LOCK_TTL_MS } from './disk-lock.js';
import { listSegments } from './journal.js';
import { ChunkIdMap } from './chunk-map.js';
import type { Repository } from './repository.js';

export interface GcOptions {
  /** Objects younger than this are never deleted: a writer may be about to reference them. */
  readonly safetyMarginMs?: number;
  readonly dryRun?: boolean;
}

export interface GcResult {
  readonly deferred: boolean;
  readonly activeWriters: number;
  readonly livePacks: number;
  readonly deletedPacks: number;
  readonly deletedBytes: number;
  readonly rewrittenIndexes: number;
  readonly deletedOrphanIndexes: number;
  readonly deletedSegments: number;
  readonly dryRun: boolean;
}

export const DEFAULT_GC_MARGIN_MS = 60 * 60 * 1000;

/**
 * Mark and sweep. Marks every chunk a point needs, then deletes packs none of
 * whose chunks is live, journal segments already folded into the newest point,
 * and leftovers of interrupted writers (point indexes without a manifest, packs
 * no index lists) — only when older than the safety margin. Index objects are
 * rewritten without dead packs before the packs go, so no index ever names a
 * deleted pack. While any writer holds a fresh disk lock, nothing that writer
 * might deduplicate against is swept (the run reports `deferred`); writers
 * re-check the packs they reused before committing (backup.ts).
 */
export async function collectGarbage(repo: Repository, options: GcOptions = {}): Promise<GcResult> {
  const margin = options.safetyMarginMs ?? DEFAULT_GC_MARGIN_MS;
  const cutoff = repo.clock.now().getTime() - margin;
  const dry = options.dryRun ?? false;
  const writers = await activeLocks(repo);
  const deferred = writers.length > 0;

  // Mark.
  const live = new ChunkIdMap<true>();
  const manifests = new Set<string>();
  const orphanIndexes: string[] = [];
  const pointIndexes: { key: string; modified: number }[] = [];
  for await (const info of repo.storage.list(POINTS_PREFIX)) {
    const p = parsePointKey(info.key);
    if (p?.kind === 'manifest') manifests.add(`${p.disk}/${p.pointId}`);
    else if (p?.kind === 'index') pointIndexes.push({ key: info.key, modified: info.modifiedAt.getTime() });
  }
  for (const pi of pointIndexes) {
    const p = parsePointKey(pi.key) as { disk: string; pointId: string };
    if (!manifests.has(`${p.disk}/${p.pointId}`) && pi.modified < cutoff) orphanIndexes.push(pi.key);
  }
  for (const manifest of await repo.listPoints()) {
    const index = await repo.readPointIndex(manifest);
    for (let o = 0; o < index.ids.length; o += CHUNK_ID_BYTES) {
      if (!isZeroId(index.ids, o)) live.add(index.ids, o, true);
    }
  }

  // Which packs are dead.
  const indexes: { key: string; headers: PackHeader[] }[] = [];
  for await (const info of repo.storage.list(INDEX_PREFIX)) indexes.push({ key: info.key, headers: decodeIndex(await repo.getSealed(info.key), info.key) });
  const indexed = new Set<string>();
  const dead = new Set<string>();
  let livePacks = 0;
  for (const { headers } of indexes) {
    for (const h of headers) {
      const id = h.packId.toString('hex');
      indexed.add(id);
      if (h.chunks.some((c) => live.has(c.id))) livePacks++;
      else if (h.createdAtMs < cutoff && !deferred) dead.add(id);
    }
  }
  // A pack listed live in one index object is live, even if another copy of its header looks dead.
  for (const { headers } of indexes) for (const h of headers) if (h.chunks.some((c) => live.has(c.id))) dead.delete(h.packId.toString('hex'));

  let rewrittenIndexes = 0;
  let deletedPacks = 0;
  let deletedBytes = 0;
  if (!dry) {
    for (const ix of indexes) {
      if (!ix.headers.some((h) => dead.has(h.packId.toString('hex')))) continue;
      const keep = ix.headers.filter((h) => !dead.has(h.packId.toString('hex')));
      if (keep.length > 0) await repo.writeIndex(keep);
      await repo.storage.delete(ix.key);
      rewrittenIndexes++;
    }
    repo.forgetChunkIndex();
  }
  for await (const info of repo.storage.list(DATA_PREFIX)) {
    const id = packIdFromKey(info.key);
    if (!id) continue;
    const orphan = !indexed.has(id) && info.modifiedAt.getTime() < cutoff && !deferred;
    if (dead.has(id) || orphan) {
      deletedPacks++;
      deletedBytes += info.sizeBytes;
      if (!dry) await repo.storage.delete(packKey(id));
    }
  }
  if (!dry) for (const key of orphanIndexes) await repo.storage.delete(key);

  // Journal segments already folded into each disk's newest point.
  let deletedSegments = 0;
  const disks = new Set<string>();
  for (const m of await repo.listPoints()) disks.add(m.disk);
  for (const disk of disks) {
    const newest = await repo.latestPoint(disk);
    if (!newest) continue;
    for (const s of await listSegments(repo, disk)) {
      const folded = s.generation < newest.source.generation || (s.generation === newest.source.generation && s.sequence <= newest.source.lastSequence);
      if (!folded) continue;
      const info = await repo.storage.stat(s.key);
      if (info && info.modifiedAt.getTime() < cutoff) {
        deletedSegments++;
        if (!dry) await repo.storage.delete(s.key);
      }
    }
  }

  // Locks abandoned by writers that died (not refreshed within the TTL).
  const fresh = new Set(writers.map((w) => w.disk));
  if (!dry) {
    for await (const info of repo.storage.list(LOCKS_PREFIX)) {
      if (!fresh.has(info.key.slice(LOCKS_PREFIX.length)) && info.modifiedAt.getTime() < repo.clock.now().getTime() - LOCK_TTL_MS) {
        await repo.storage.delete(info.key);
      }
    }
  }

  return {
    deferred,
    activeWriters: writers.length,
    livePacks,
    deletedPacks,
    deletedBytes,
    rewrittenIndexes,
    deletedOrphanIndexes: dry ? 0 : orphanIndexes.length,
    deletedSegments,
    dryRun: dry,
  };
}
