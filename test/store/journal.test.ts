import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { backupSource } from '../../src/store/backup.js';
import { collectGarbage } from '../../src/store/gc.js';
import { listSegments, processJournal, writeSegment } from '../../src/store/journal.js';
import { Repository } from '../../src/store/repository.js';
import { segmentKey } from '../../src/format/layout.js';
import type { SegmentExtent } from '../../src/format/segment.js';
import { seededBytes } from '../helpers/images.js';
import { FakeClock, memoryRepo, PASS } from '../helpers/store.js';
import { rejectsCode } from '../format/fuzz.js';
import { MemorySource, readPoint } from './memory-source.js';

const CS = 4096;
const DISK = 'vm1';

/** Applies extents to a reference disk, in order, the way the journal must. */
function applyAll(ref: Buffer, extents: readonly SegmentExtent[]): void {
  for (const e of extents) e.data.copy(ref, e.offset);
}

interface Region {
  offset: number;
  length: number;
  kind: 'random' | 'zero' | 'pattern';
  seed: number;
}

function fillRegion(buf: Buffer, r: Region): void {
  // seededBytes cannot make fewer than 4 bytes: ask for 4 more and cut.
  const data = r.kind === 'random' ? seededBytes(r.length + 4, r.seed).subarray(0, r.length) : Buffer.alloc(r.length, r.kind === 'zero' ? 0 : r.seed & 0xff);
  data.copy(buf, r.offset);
}

/** Extents of a disk of `size`: unaligned, overlapping, crossing chunk ends, zeros among them. */
const extentArb = (size: number): fc.Arbitrary<SegmentExtent> =>
  fc
    .record({
      offset: fc.oneof(fc.nat({ max: size - 1 }), fc.nat({ max: Math.floor((size - 1) / CS) }).map((c) => c * CS)),
      length: fc.oneof(fc.nat({ max: 3 * CS }), fc.constantFrom(1, CS - 1, CS, CS + 1)),
      kind: fc.constantFrom<Region['kind']>('random', 'random', 'zero', 'pattern'),
      seed: fc.integer({ min: 1, max: 2 ** 31 }),
    })
    .map((r) => {
      const length = Math.min(r.length, size - r.offset);
      const data = Buffer.alloc(length);
      fillRegion(data, { ...r, offset: 0, length });
      return { offset: r.offset, data };
    });

const scenarioArb = fc
  .record({
    // Often not a multiple of the chunk size; sometimes smaller than one chunk.
    size: fc.oneof(fc.integer({ min: 1, max: 40 * CS }), fc.integer({ min: 1, max: 40 }).map((n) => n * CS)),
    withBase: fc.boolean(),
    generation: fc.constantFrom(0, 1, 7),
  })
  .chain(({ size, withBase, generation }) =>
    fc.record({
      size: fc.constant(size),
      generation: fc.constant(generation),
      base: withBase
        ? fc
            .array(
              fc.record({
                offset: fc.nat({ max: size - 1 }),
                length: fc.integer({ min: 1, max: 6 * CS }),
                kind: fc.constantFrom<Region['kind']>('random', 'zero', 'pattern'),
                seed: fc.integer({ min: 1, max: 2 ** 31 }),
              }),
              { maxLength: 6 },
            )
            .map((rs) => rs.map((r) => ({ ...r, length: Math.min(r.length, size - r.offset) })))
        : fc.constant(undefined),
      segments: fc.array(fc.array(extentArb(size), { maxLength: 6 }), { minLength: 1, maxLength: 5 }),
      // After which segments journal processing runs (it always runs after the last).
      processAfter: fc.array(fc.constantFrom(true, false, false), { minLength: 5, maxLength: 5 }),
    }),
  );

test('journal processing equals applying the same extents in order to a reference disk', async () => {
  await fc.assert(
    fc.asyncProperty(scenarioArb, async ({ size, generation, base, segments, processAfter }) => {
      const { repo } = await memoryRepo({ chunkSizeBytes: CS });
      const ref = Buffer.alloc(size);
      if (base) {
        for (const r of base) fillRegion(ref, r);
        // Only the listed regions are allocated: the rest of the image is holes.
        const point = await backupSource(repo, new MemorySource(Buffer.from(ref), base), { disk: DISK });
        assert.deepEqual(await readPoint(repo, point.manifest), ref, 'base point differs from its image');
      }
      let points = (await repo.listPoints(DISK)).length;
      for (let i = 0; i < segments.length; i++) {
        const extents = segments[i] as SegmentExtent[];
        await writeSegment(repo, DISK, { generation, sequence: i + 1, diskSizeBytes: size, extents });
        applyAll(ref, extents);
        if (i === segments.length - 1 || processAfter[i]) {
          const m = await processJournal(repo, DISK);
          assert.ok(m, 'pending segments produced no point');
          points++;
          assert.equal(m.origin, 'journal');
          assert.deepEqual(m.source, { generation, lastSequence: i + 1 });
          assert.equal(m.diskSizeBytes, size);
          const got = await readPoint(repo, m);
          if (!got.equals(ref)) {
            const at = got.findIndex((b, k) => b !== ref[k]);
            assert.fail(`point after segment ${i + 1} differs from the reference at byte ${at} (chunk ${Math.floor(at / CS)})`);
          }
        }
      }
      assert.equal((await repo.listPoints(DISK)).length, points);
      // Nothing pending: no second point.
      assert.equal(await processJournal(repo, DISK), undefined);
      assert.equal((await repo.listPoints(DISK)).length, points);
    }),
    // Every backup and journal run starts worker threads (~0.3 s each): keep the run count modest.
    { numRuns: 8 },
  );
});

/** A repo with a base point of `size` random bytes on DISK, and the image as a reference. */
async function withBase(size = 10 * CS + 123, clock?: FakeClock) {
  const made = await memoryRepo({ chunkSizeBytes: CS, ...(clock ? { clock } : {}) });
  const ref = seededBytes(size, 42);
  const base = await backupSource(made.repo, new MemorySource(Buffer.from(ref)), { disk: DISK });
  return { ...made, ref, base: base.manifest };
}

const ext = (offset: number, length: number, seed: number): SegmentExtent => ({ offset, data: seededBytes(length + 4, seed).subarray(0, length) });

test('a missing sequence number is a JOURNAL_GAP naming it, and nothing is processed past it', async () => {
  const { repo, ref } = await withBase();
  const size = ref.length;
  const segs = [1, 2, 3, 4, 5].map((q) => [ext(q * 1000, 5000, q)]);
  for (const q of [1, 2, 4, 5]) await writeSegment(repo, DISK, { generation: 0, sequence: q, diskSizeBytes: size, extents: segs[q - 1] as SegmentExtent[] });
  const err = await rejectsCode(processJournal(repo, DISK), 'JOURNAL_GAP');
  assert.deepEqual(err.details.missing, [3]);
  assert.match(err.message, /missing sequence 3 before 4/);
  const points = await repo.listPoints(DISK);
  assert.equal(points.length, 1, 'a point was committed across a gap');
  assert.equal(points[0]?.source.lastSequence, 0);
  // The writer fills the gap: everything folds, in order.
  await writeSegment(repo, DISK, { generation: 0, sequence: 3, diskSizeBytes: size, extents: segs[2] as SegmentExtent[] });
  const m = await processJournal(repo, DISK);
  assert.equal(m?.source.lastSequence, 5);
  for (const s of segs) applyAll(ref, s);
  assert.ok((await readPoint(repo, m!)).equals(ref));
});

test('a journal that does not start at 1 is a gap naming the first numbers', async () => {
  const { repo } = await memoryRepo({ chunkSizeBytes: CS });
  await writeSegment(repo, DISK, { generation: 3, sequence: 4, diskSizeBytes: CS, extents: [ext(0, 10, 1)] });
  const err = await rejectsCode(processJournal(repo, DISK), 'JOURNAL_GAP');
  assert.deepEqual(err.details.missing, [1, 2, 3]);
  assert.equal((await repo.listPoints(DISK)).length, 0);
});

test('a replayed sequence number with other content is a CONFLICT and the first content stays', async () => {
  const { repo, ref } = await withBase();
  const first = [ext(100, 3000, 1)];
  await writeSegment(repo, DISK, { generation: 0, sequence: 1, diskSizeBytes: ref.length, extents: first });
  const err = await rejectsCode(
    writeSegment(repo, DISK, { generation: 0, sequence: 1, diskSizeBytes: ref.length, extents: [ext(100, 3000, 2)] }),
    'CONFLICT',
  );
  assert.equal(err.retryable, false, 'a forked stream does not heal by retrying');
  const m = await processJournal(repo, DISK);
  applyAll(ref, first);
  assert.ok((await readPoint(repo, m!)).equals(ref));
  // Also after it was folded.
  await rejectsCode(writeSegment(repo, DISK, { generation: 0, sequence: 1, diskSizeBytes: ref.length, extents: [] }), 'CONFLICT');
});

test('a new generation starts at sequence 1, and the older generation is fenced from then on', async () => {
  const { repo, ref } = await withBase();
  const size = ref.length;
  const g1 = [[ext(0, 100, 1)], [ext(CS - 50, 100, 2)]];
  for (let i = 0; i < g1.length; i++) await writeSegment(repo, DISK, { generation: 1, sequence: i + 1, diskSizeBytes: size, extents: g1[i]! });
  const p1 = await processJournal(repo, DISK);
  assert.deepEqual(p1?.source, { generation: 1, lastSequence: 2 });
  g1.forEach((s) => applyAll(ref, s));

  // The source restarts (new generation): its numbering starts again at 1.
  const g2 = [[ext(5 * CS, 2 * CS, 3)], [ext(2, 7, 4)], [ext(size - 10, 10, 5)]];
  for (let i = 0; i < g2.length; i++) await writeSegment(repo, DISK, { generation: 2, sequence: i + 1, diskSizeBytes: size, extents: g2[i]! });
  // The old generation's writer has not noticed yet: it may still write, since no point is at generation 2.
  await writeSegment(repo, DISK, { generation: 1, sequence: 3, diskSizeBytes: size, extents: [ext(0, 4096, 99)] });
  // Generation 1 has a pending segment: it is folded before the newer generation starts.
  const p2 = await processJournal(repo, DISK);
  assert.deepEqual(p2?.source, { generation: 1, lastSequence: 3 });
  applyAll(ref, [ext(0, 4096, 99)]);
  const p3 = await processJournal(repo, DISK);
  assert.deepEqual(p3?.source, { generation: 2, lastSequence: 3 });
  g2.forEach((s) => applyAll(ref, s));
  assert.ok((await readPoint(repo, p3!)).equals(ref));

  const err = await rejectsCode(writeSegment(repo, DISK, { generation: 1, sequence: 4, diskSizeBytes: size, extents: [ext(0, 1, 1)] }), 'GENERATION_FENCED');
  assert.equal(err.details.current, 2);
  assert.equal(await processJournal(repo, DISK), undefined);
});

test('a segment moved to another sequence number or disk fails authentication (CORRUPT_OBJECT) and commits nothing', async () => {
  const { repo, storage, ref } = await withBase();
  const size = ref.length;
  for (const q of [1, 2]) await writeSegment(repo, DISK, { generation: 0, sequence: q, diskSizeBytes: size, extents: [ext(q * 10, 10, q)] });
  // Segment 2's bytes put under sequence 3, as if replayed under another number.
  await storage.put(segmentKey(DISK, 0, 3), storage.rawObject(segmentKey(DISK, 0, 2)) as Buffer);
  await rejectsCode(processJournal(repo, DISK), 'CORRUPT_OBJECT');
  assert.equal((await repo.listPoints(DISK)).length, 1);
  // Swapping two segments' contents is caught the same way.
  await storage.delete(segmentKey(DISK, 0, 3));
  const one = storage.rawObject(segmentKey(DISK, 0, 1)) as Buffer;
  storage.setRawObject(segmentKey(DISK, 0, 1), storage.rawObject(segmentKey(DISK, 0, 2)) as Buffer);
  storage.setRawObject(segmentKey(DISK, 0, 2), one);
  await rejectsCode(processJournal(repo, DISK), 'CORRUPT_OBJECT');
  // Copied to another disk's journal.
  const other = 'vm2';
  await storage.put(segmentKey(other, 0, 1), one);
  await rejectsCode(processJournal(repo, other), 'CORRUPT_OBJECT');
  assert.equal((await repo.listPoints(other)).length, 0);
  // A flipped byte in a stored segment.
  storage.setRawObject(segmentKey(DISK, 0, 2), one);
  const flipped = Buffer.from(storage.rawObject(segmentKey(DISK, 0, 1)) as Buffer);
  flipped.writeUInt8((flipped[flipped.length >> 1] as number) ^ 1, flipped.length >> 1);
  storage.setRawObject(segmentKey(DISK, 0, 1), flipped);
  await rejectsCode(processJournal(repo, DISK), 'CORRUPT_OBJECT');
  assert.equal((await repo.listPoints(DISK)).length, 1);
});

test('processing twice commits one point; the second run has nothing pending', async () => {
  const { repo, ref } = await withBase();
  await writeSegment(repo, DISK, { generation: 0, sequence: 1, diskSizeBytes: ref.length, extents: [ext(0, 10, 1)] });
  assert.ok(await processJournal(repo, DISK));
  const reopened = await Repository.open(repo.storage, PASS);
  assert.equal(await processJournal(reopened, DISK), undefined);
  assert.equal((await repo.listPoints(DISK)).length, 2);
});

test('gc deletes folded segments only, and only once they are older than the safety margin', async () => {
  const clock = new FakeClock();
  const { repo, ref } = await withBase(8 * CS, clock);
  const size = ref.length;
  const segs = [1, 2, 3, 4].map((q) => [ext(q * 777, 3000, q)]);
  // Points are ordered by id, and ids of one millisecond by chance: let time pass between points.
  clock.advance(1000);
  for (const q of [1, 2, 3]) await writeSegment(repo, DISK, { generation: 0, sequence: q, diskSizeBytes: size, extents: segs[q - 1]! });
  await processJournal(repo, DISK);
  await writeSegment(repo, DISK, { generation: 0, sequence: 4, diskSizeBytes: size, extents: segs[3]! });
  const margin = 60 * 60 * 1000;

  const young = await collectGarbage(repo, { safetyMarginMs: margin });
  assert.equal(young.deletedSegments, 0);
  assert.equal((await listSegments(repo, DISK)).length, 4);

  clock.advance(margin + 1000);
  const dry = await collectGarbage(repo, { safetyMarginMs: margin, dryRun: true });
  assert.equal(dry.deletedSegments, 3);
  assert.equal((await listSegments(repo, DISK)).length, 4, 'dry run deleted segments');

  const old = await collectGarbage(repo, { safetyMarginMs: margin });
  assert.equal(old.deletedSegments, 3);
  assert.deepEqual((await listSegments(repo, DISK)).map((s) => s.sequence), [4]);

  // The unfolded segment still folds onto the newest point.
  const m = await processJournal(repo, DISK);
  assert.deepEqual(m?.source, { generation: 0, lastSequence: 4 });
  segs.forEach((s) => applyAll(ref, s));
  assert.ok((await readPoint(repo, m!)).equals(ref));
});

test('a shrinking disk drops the data past its new end: growing it again reads zeros there', async () => {
  const size = 4 * CS;
  const { repo, ref } = await withBase(size);
  const half = 2 * CS + CS / 2;
  await writeSegment(repo, DISK, { generation: 0, sequence: 1, diskSizeBytes: half, extents: [] });
  const shrunk = await processJournal(repo, DISK);
  assert.equal(shrunk?.diskSizeBytes, half);
  assert.ok((await readPoint(repo, shrunk!)).equals(ref.subarray(0, half)));
  await writeSegment(repo, DISK, { generation: 0, sequence: 2, diskSizeBytes: size, extents: [] });
  const grown = await processJournal(repo, DISK);
  const expected = Buffer.concat([ref.subarray(0, half), Buffer.alloc(size - half)]);
  const got = await readPoint(repo, grown!);
  assert.ok(got.equals(expected), `bytes past the old end are not zero: first non-zero at ${got.subarray(half).findIndex((b) => b !== 0) + half}`);
});

test('a write near the end followed by a shrink, folded in one run, keeps the journal processable', async () => {
  const size = 4 * CS;
  const { repo, ref } = await withBase(size);
  await writeSegment(repo, DISK, { generation: 0, sequence: 1, diskSizeBytes: size, extents: [ext(size - 100, 100, 1)] });
  await writeSegment(repo, DISK, { generation: 0, sequence: 2, diskSizeBytes: 2 * CS, extents: [ext(0, 10, 2)] });
  const m = await processJournal(repo, DISK);
  assert.equal(m?.diskSizeBytes, 2 * CS);
  const expected = Buffer.from(ref.subarray(0, 2 * CS));
  applyAll(expected, [ext(0, 10, 2)]);
  assert.ok((await readPoint(repo, m!)).equals(expected));
});
