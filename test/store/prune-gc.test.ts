import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { backupSource, checkPacksStillThere } from '../../src/store/backup.js';
import { collectGarbage } from '../../src/store/gc.js';
import { DiskLock } from '../../src/store/disk-lock.js';
import { PackWriter } from '../../src/store/pack-writer.js';
import { prunePoints, selectKept, type RetentionRules } from '../../src/store/prune.js';
import { Repository } from '../../src/store/repository.js';
import { WorkerPool } from '../../src/store/worker-pool.js';
import { ChunkHasher } from '../../src/format/crypto.js';
import { encodeDiskIndex, newDiskIndex } from '../../src/format/disk-index.js';
import { newTimeId } from '../../src/format/ids.js';
import { DATA_PREFIX, INDEX_PREFIX, packIdFromKey, pointIndexKey, pointManifestKey, POINTS_PREFIX } from '../../src/format/layout.js';
import type { PointManifest } from '../../src/format/manifest.js';
import { decodeIndex, type PackHeader } from '../../src/format/pack.js';
import { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { listAll, type Storage } from '../../src/storage/storage.js';
import { seededBytes } from '../helpers/images.js';
import { FakeClock, memoryRepo, PASS, TEST_SCRYPT } from '../helpers/store.js';
import { rejectsCode } from '../format/fuzz.js';
import { MemorySource, readPoint } from './memory-source.js';

const CS = 4096;
const HOUR = 3600_000;
const DAY = 24 * HOUR;

// ---- selectKept -------------------------------------------------------------

/** A manifest as selectKept sees it: only the id and the creation time matter. */
function pointAt(ms: number, disk = 'vm1'): PointManifest {
  const d = new Date(ms);
  return {
    formatVersion: 1,
    pointId: newTimeId(d),
    disk,
    diskSizeBytes: CS,
    chunkSizeBytes: CS,
    createdAt: d.toISOString(),
    consistency: 'crash',
    parentPointId: null,
    source: { generation: 0, lastSequence: 0 },
    origin: 'backup',
    indexDigest: '',
    stats: { dataChunks: 0, zeroChunks: 1, newChunks: 0, bytesRead: 0, bytesStored: 0 },
  };
}

const T = (iso: string): number => Date.parse(iso);
const idsOf = (ps: PointManifest[]): Set<string> => new Set(ps.map((p) => p.pointId));

test('the newest point is kept whatever the rules say', () => {
  const points = [0, 1, 2].map((i) => pointAt(T('2026-01-01T00:00:00Z') + i * DAY));
  const now = new Date(T('2027-01-01T00:00:00Z'));
  assert.deepEqual(selectKept(points, { keepLast: 0 }, now), new Set([points[2]!.pointId]));
  assert.deepEqual(selectKept(points, { keepWithinMs: HOUR }, now), new Set([points[2]!.pointId]));
  assert.deepEqual(selectKept([], { keepLast: 3 }, now), new Set());
  // Input order does not matter.
  assert.deepEqual(selectKept([...points].reverse(), { keepLast: 0 }, now), new Set([points[2]!.pointId]));
});

test('keep-last and keep-within', () => {
  const base = T('2026-03-01T00:00:00Z');
  const points = Array.from({ length: 10 }, (_, i) => pointAt(base + i * HOUR));
  const now = new Date(base + 9 * HOUR);
  assert.deepEqual(selectKept(points, { keepLast: 3 }, now), idsOf(points.slice(7)));
  assert.deepEqual(selectKept(points, { keepLast: 99 }, now), idsOf(points));
  // Within 2 hours of now, boundary included: points 7, 8, 9.
  assert.deepEqual(selectKept(points, { keepWithinMs: 2 * HOUR }, now), idsOf(points.slice(7)));
  assert.deepEqual(selectKept(points, { keepWithinMs: 2 * HOUR - 1 }, now), idsOf(points.slice(8)));
});

test('daily, weekly and monthly buckets keep the newest point of each of the newest N buckets', () => {
  // Every 6 hours from Mon 2025-12-22 to Sat 2026-01-10 (UTC).
  const start = T('2025-12-22T03:00:00Z');
  const points = Array.from({ length: 4 * 20 }, (_, i) => pointAt(start + i * 6 * HOUR));
  const newestOfDay = (day: string): string => {
    const inDay = points.filter((p) => p.createdAt.startsWith(day));
    return inDay[inDay.length - 1]!.pointId;
  };
  const now = new Date(T('2026-01-11T00:00:00Z'));

  assert.deepEqual(selectKept(points, { keepDaily: 3 }, now), new Set(['2026-01-10', '2026-01-09', '2026-01-08'].map(newestOfDay)));
  // ISO weeks start on Monday; 2025-12-29..2026-01-04 is 2026-W01 across the year end.
  assert.deepEqual(selectKept(points, { keepWeekly: 3 }, now), new Set(['2026-01-10', '2026-01-04', '2025-12-28'].map(newestOfDay)));
  assert.deepEqual(selectKept(points, { keepMonthly: 5 }, now), new Set(['2026-01-10', '2025-12-31'].map(newestOfDay)));
  // Rules add up.
  assert.deepEqual(
    selectKept(points, { keepDaily: 2, keepWeekly: 2 }, now),
    new Set(['2026-01-10', '2026-01-09', '2026-01-04'].map(newestOfDay)),
  );
});

/** An independent model of the bucket rules: ISO weeks named by their Monday. */
function modelKept(points: PointManifest[], rules: RetentionRules, now: Date): Set<string> {
  const newestFirst = [...points].sort((a, b) => (a.pointId < b.pointId ? 1 : -1));
  const keep = new Set<string>(newestFirst.slice(0, Math.max(1, rules.keepLast ?? 0)).map((p) => p.pointId));
  for (const p of newestFirst) if (rules.keepWithinMs !== undefined && now.getTime() - Date.parse(p.createdAt) <= rules.keepWithinMs) keep.add(p.pointId);
  const monday = (d: Date): string => new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - ((d.getUTCDay() + 6) % 7))).toISOString().slice(0, 10);
  const bucketRules: [number | undefined, (d: Date) => string][] = [
    [rules.keepHourly, (d) => d.toISOString().slice(0, 13)],
    [rules.keepDaily, (d) => d.toISOString().slice(0, 10)],
    [rules.keepWeekly, monday],
    [rules.keepMonthly, (d) => d.toISOString().slice(0, 7)],
  ];
  for (const [n, bucket] of bucketRules) {
    const newestOfBucket = new Map<string, string>();
    for (const p of newestFirst) {
      const b = bucket(new Date(p.createdAt));
      if (!newestOfBucket.has(b)) newestOfBucket.set(b, p.pointId);
    }
    [...newestOfBucket.values()].slice(0, n ?? 0).forEach((id) => keep.add(id));
  }
  return keep;
}

test('selectKept agrees with an independent model of the rules', () => {
  const rulesArb = fc.record(
    {
      keepLast: fc.nat({ max: 6 }),
      keepWithinMs: fc.nat({ max: 40 * DAY }),
      keepHourly: fc.nat({ max: 6 }),
      keepDaily: fc.nat({ max: 6 }),
      keepWeekly: fc.nat({ max: 6 }),
      keepMonthly: fc.nat({ max: 6 }),
    },
    { requiredKeys: [] },
  );
  const start = T('2025-10-01T00:00:00Z');
  fc.assert(
    fc.property(fc.uniqueArray(fc.nat({ max: 200 * DAY }), { maxLength: 60 }), rulesArb, fc.nat({ max: 10 * DAY }), (offsets, rules, after) => {
      const points = offsets.map((o) => pointAt(start + o));
      const now = new Date(start + Math.max(0, ...offsets) + after);
      const kept = selectKept(points, rules, now);
      assert.deepEqual(kept, modelKept(points, rules, now));
      // Dropping a rule never keeps more.
      for (const k of Object.keys(rules) as (keyof RetentionRules)[]) {
        const fewer = { ...rules, [k]: undefined };
        for (const id of selectKept(points, fewer, now)) assert.ok(kept.has(id));
      }
    }),
    { numRuns: 300 },
  );
});

// ---- prunePoints ------------------------------------------------------------

/** MemoryStorage that records deletes and can be told to fail some. */
class RecordingStorage extends MemoryStorage {
  readonly deletes: string[] = [];
  failDelete: ((key: string) => boolean) | undefined;

  override async delete(key: string): Promise<void> {
    if (this.failDelete?.(key)) throw new Error(`injected failure deleting ${key}`);
    this.deletes.push(key);
    await super.delete(key);
  }
}

async function recordingRepo(clock: FakeClock) {
  const storage = new RecordingStorage({ now: () => clock.now() });
  const { repo } = await Repository.init(storage, { passphrase: PASS, scrypt: TEST_SCRYPT, chunkSizeBytes: CS, clock });
  return { storage, repo };
}

const image = (chunks: number, seed: number): MemorySource => new MemorySource(seededBytes(chunks * CS, seed));

test('prune deletes each removed point manifest first, then its index, and keeps every disk its newest point', async () => {
  const clock = new FakeClock();
  const { storage, repo } = await recordingRepo(clock);
  const made: PointManifest[] = [];
  for (let i = 0; i < 2; i++) {
    for (const disk of ['a', 'b']) made.push((await backupSource(repo, image(2, i * 10 + disk.charCodeAt(0)), { disk })).manifest);
    clock.advance(DAY);
  }
  storage.deletes.length = 0; // the writers' lock releases
  const dry = await prunePoints(repo, { keepLast: 1 }, { dryRun: true });
  assert.equal(dry.removed.length, 2);
  assert.equal(storage.deletes.length, 0, 'dry run deleted something');
  assert.equal((await repo.listPoints()).length, 4);

  const res = await prunePoints(repo, { keepLast: 1 });
  assert.deepEqual(idsOf(res.kept), idsOf([made[2]!, made[3]!]));
  assert.deepEqual(idsOf(res.removed), idsOf(made.slice(0, 2)));
  assert.deepEqual(idsOf(await repo.listPoints()), idsOf(res.kept));
  for (const p of res.removed) {
    const m = storage.deletes.indexOf(pointManifestKey(p.disk, p.pointId));
    const ix = storage.deletes.indexOf(pointIndexKey(p.disk, p.pointId));
    assert.ok(m >= 0 && ix > m, `${p.pointId}: manifest at ${m}, index at ${ix}`);
  }
  // Prune only frees points; chunk data is gc's job.
  assert.ok(storage.deletes.every((k) => k.startsWith(POINTS_PREFIX)));
  for (const p of res.kept) assert.ok((await readPoint(repo, p)).length === 2 * CS);

  await rejectsCode(prunePoints(repo, {}), 'USAGE');
  await rejectsCode(prunePoints(repo, { keepLast: -1 }), 'USAGE');
  await rejectsCode(prunePoints(repo, { keepDaily: Number.NaN }), 'USAGE');
});

test('a prune interrupted between manifest and index leaves an orphan index that gc removes after the margin', async () => {
  const clock = new FakeClock();
  const { storage, repo } = await recordingRepo(clock);
  const old = (await backupSource(repo, image(3, 1), { disk: 'a' })).manifest;
  clock.advance(DAY);
  const now = (await backupSource(repo, image(3, 2), { disk: 'a' })).manifest;
  storage.failDelete = (k) => k.endsWith('.index');
  await assert.rejects(prunePoints(repo, { keepLast: 1 }), /injected failure/);
  storage.failDelete = undefined;
  // The point is gone (its manifest is), its index is left behind.
  assert.deepEqual(idsOf(await repo.listPoints()), idsOf([now]));
  assert.ok(await storage.stat(pointIndexKey('a', old.pointId)));

  const margin = HOUR;
  clock.advance(margin / 2);
  await collectGarbage(repo, { safetyMarginMs: DAY * 2 });
  assert.ok(await storage.stat(pointIndexKey('a', old.pointId)), 'orphan index younger than the margin was deleted');
  const res = await collectGarbage(repo, { safetyMarginMs: margin });
  assert.equal(res.deletedOrphanIndexes, 1);
  assert.equal(await storage.stat(pointIndexKey('a', old.pointId)), undefined);
  assert.ok((await readPoint(repo, now)).equals(image(3, 2).bytes));
});

// ---- gc ---------------------------------------------------------------------

async function packIds(storage: Storage): Promise<Set<string>> {
  return new Set((await listAll(storage, DATA_PREFIX)).map((i) => packIdFromKey(i.key)).filter((x): x is string => x !== undefined));
}

test('gc frees packs only dead points used, only after the margin, and every remaining point still restores bit for bit', async () => {
  const clock = new FakeClock();
  const { repo, storage } = await memoryRepo({ chunkSizeBytes: CS, clock });
  const images = new Map<string, Buffer>();
  const backup = async (disk: string, src: MemorySource): Promise<PointManifest> => {
    const m = (await backupSource(repo, src, { disk })).manifest;
    images.set(m.pointId, src.bytes);
    return m;
  };
  const a1 = image(16, 1);
  await backup('a', a1);
  const packsA1 = await packIds(storage);
  // Disk b shares four chunks with a's first point.
  await backup('b', new MemorySource(Buffer.concat([a1.bytes.subarray(0, 4 * CS), seededBytes(6 * CS, 3)])));
  await backup('c', image(8, 4));
  const packsC1 = new Set([...(await packIds(storage))].filter((id) => !packsA1.has(id)));
  clock.advance(10 * 60_000);
  await backup('a', image(16, 2));
  const packsBeforePrune = await packIds(storage);
  await backup('c', image(8, 5));

  const pruned = await prunePoints(repo, { keepLast: 1 });
  assert.equal(pruned.removed.length, 2);
  const margin = HOUR;

  const early = await collectGarbage(repo, { safetyMarginMs: margin });
  assert.equal(early.deletedPacks, 0, 'gc deleted packs younger than the margin');
  assert.equal(early.deferred, false);

  clock.advance(2 * HOUR);
  const dry = await collectGarbage(repo, { safetyMarginMs: margin, dryRun: true });
  assert.ok(dry.deletedPacks > 0);
  assert.deepEqual(await packIds(storage), new Set([...packsBeforePrune, ...(await packIds(storage))]), 'dry run deleted packs');

  const res = await collectGarbage(repo, { safetyMarginMs: margin });
  assert.equal(res.deletedPacks, dry.deletedPacks);
  assert.ok(res.rewrittenIndexes > 0);
  const after = await packIds(storage);
  for (const id of packsA1) assert.ok(after.has(id), 'a pack still used by disk b was deleted');
  // c's first point was the only user of some packs: those are gone. (b's new chunks may share a pack.)
  const goneC = [...packsC1].filter((id) => !after.has(id));
  assert.equal(goneC.length, res.deletedPacks);
  assert.ok(goneC.length > 0);

  // Every remaining point restores, through a fresh repository that reads the rewritten indexes.
  const fresh = await Repository.open(storage, PASS, { clock });
  for (const m of await fresh.listPoints()) assert.ok((await readPoint(fresh, m)).equals(images.get(m.pointId)!), `point ${m.disk}/${m.pointId}`);
  // Nothing left to do.
  const again = await collectGarbage(fresh, { safetyMarginMs: margin });
  assert.equal(again.deletedPacks + again.rewrittenIndexes + again.deletedOrphanIndexes, 0);
});

/** Writes chunks into a pack the way an interrupted backup would: data stored, never indexed. */
async function writeUnindexedPack(repo: Repository, data: Buffer): Promise<PackHeader[]> {
  const pool = new WorkerPool(repo.key.idKey, 1);
  try {
    const writer = new PackWriter(repo, pool);
    const hasher = new ChunkHasher(repo.key.idKey);
    const chunks = [];
    for (let o = 0; o < data.length; o += CS) chunks.push({ id: Buffer.from(hasher.id(data.subarray(o, o + CS))), data: data.subarray(o, o + CS) });
    await writer.addChunks(chunks);
    return await writer.finish();
  } finally {
    await pool.close();
  }
}

test('leftovers of an interrupted writer go only after the margin, and a fresh disk lock defers the sweep', async () => {
  const clock = new FakeClock();
  const { repo, storage } = await memoryRepo({ chunkSizeBytes: CS, clock });
  const keep = (await backupSource(repo, image(4, 1), { disk: 'a' })).manifest;
  const dead = (await backupSource(repo, image(4, 2), { disk: 'b' })).manifest;
  clock.advance(60_000);
  await backupSource(repo, image(4, 3), { disk: 'b' });
  await prunePoints(repo, { keepLast: 1 });
  assert.equal((await repo.listPoints()).some((p) => p.pointId === dead.pointId), false);

  // The interrupted writer: a pack no index lists, and a point index without a manifest.
  const orphanPacks = await writeUnindexedPack(repo, seededBytes(3 * CS, 9));
  assert.equal(orphanPacks.length, 1);
  const orphanPack = orphanPacks[0]!.packId.toString('hex');
  const orphanIndex = pointIndexKey('c', newTimeId(clock.now()));
  await repo.putSealed(orphanIndex, encodeDiskIndex(newDiskIndex(CS, CS)));

  const margin = HOUR;
  clock.advance(margin / 2);
  const young = await collectGarbage(repo, { safetyMarginMs: margin });
  assert.equal(young.deletedPacks, 0);
  assert.equal(young.deletedOrphanIndexes, 0);
  assert.ok((await packIds(storage)).has(orphanPack));
  assert.ok(await storage.stat(orphanIndex));

  clock.advance(margin);
  // A writer at work: nothing it could deduplicate against is swept.
  const lock = await DiskLock.acquire(repo, 'z', 'backup');
  let deferredRun;
  try {
    deferredRun = await collectGarbage(repo, { safetyMarginMs: margin });
  } finally {
    await lock.release();
  }
  assert.equal(deferredRun.deferred, true);
  assert.equal(deferredRun.activeWriters, 1);
  assert.equal(deferredRun.deletedPacks, 0, 'packs swept while a writer held a fresh lock');
  assert.ok((await packIds(storage)).has(orphanPack));

  const swept = await collectGarbage(repo, { safetyMarginMs: margin });
  assert.equal(swept.deferred, false);
  assert.ok(swept.deletedPacks >= 2, `deleted ${swept.deletedPacks}: the orphan pack and the dead point's pack`);
  // Point indexes are not deduplicated against, so the deferred run may already have taken it.
  assert.equal(deferredRun.deletedOrphanIndexes + swept.deletedOrphanIndexes, 1);
  assert.equal((await packIds(storage)).has(orphanPack), false);
  assert.equal(await storage.stat(orphanIndex), undefined);
  assert.ok((await readPoint(repo, keep)).equals(image(4, 1).bytes));
});

test('a backup that reused a pack a concurrent gc removed fails with CONFLICT and commits nothing; the retry succeeds', async () => {
  const clock = new FakeClock();
  const { repo, storage } = await memoryRepo({ chunkSizeBytes: CS, clock });
  const shared = image(6, 7);
  await backupSource(repo, shared, { disk: 'a' });
  clock.advance(60_000);
  await backupSource(repo, image(6, 8), { disk: 'a' });

  // Another writer loaded the chunk index while the old point was still alive.
  const writer = await Repository.open(storage, PASS, { clock });
  await writer.chunkIndex();
  await prunePoints(repo, { keepLast: 1 });
  clock.advance(2 * HOUR);
  const res = await collectGarbage(repo, { safetyMarginMs: HOUR });
  assert.ok(res.deletedPacks > 0);

  const err = await rejectsCode(backupSource(writer, shared, { disk: 'b' }), 'CONFLICT');
  assert.equal(err.retryable, true);
  assert.equal((await writer.listPoints('b')).length, 0, 'a point with holes was committed');
  const retry = await backupSource(writer, shared, { disk: 'b' });
  assert.equal(retry.newChunks, 6);
  assert.ok((await readPoint(writer, retry.manifest)).equals(shared.bytes));

  // The check itself: a reused pack that vanished is a CONFLICT, present packs pass.
  const [ix] = await listAll(storage, INDEX_PREFIX);
  const pack = decodeIndex(await writer.getSealed(ix!.key), ix!.key)[0];
  assert.ok(pack);
  await checkPacksStillThere(writer, new Map([[pack.packId.toString('hex'), pack]]));
  await rejectsCode(checkPacksStillThere(writer, new Map([['00'.repeat(16), pack]])), 'CONFLICT');
});

test('random backups, prunes and gc runs never lose a byte of a remaining point', async () => {
  const step = fc.record({
    disk: fc.constantFrom('a', 'b'),
    // Images drawn from a small pool of blocks, so points share chunks across disks and time.
    blocks: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 1, maxLength: 8 }),
    keepLast: fc.option(fc.nat({ max: 2 }), { nil: undefined }),
    advanceMs: fc.constantFrom(0, 30 * 60_000, 2 * HOUR),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 2, maxLength: 5 }), async (steps) => {
      const clock = new FakeClock();
      const { repo, storage } = await memoryRepo({ chunkSizeBytes: CS, clock });
      const images = new Map<string, Buffer>();
      for (const s of steps) {
        // Block 0 is zeros: it is never stored.
        const bytes = Buffer.concat(s.blocks.map((b) => (b === 0 ? Buffer.alloc(CS) : seededBytes(CS, b))));
        const m = (await backupSource(repo, new MemorySource(bytes), { disk: s.disk })).manifest;
        images.set(m.pointId, bytes);
        if (s.keepLast !== undefined) await prunePoints(repo, { keepLast: s.keepLast });
        clock.advance(s.advanceMs);
        await collectGarbage(repo, { safetyMarginMs: HOUR });
        const fresh = await Repository.open(storage, PASS, { clock });
        for (const p of await fresh.listPoints()) assert.ok((await readPoint(fresh, p)).equals(images.get(p.pointId)!), `point ${p.disk}/${p.pointId} changed`);
      }
    }),
    { numRuns: 3 },
  );
});
