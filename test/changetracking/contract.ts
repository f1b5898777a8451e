/**
 * The behaviour every change tracker must show (src/changetracking/tracker.ts).
 * A driver's test file calls trackerContractSuite() with a factory that gives a
 * fresh disk and tracker; the suite keeps a replica image (a Buffer) the way the
 * vault would, applies every committed cut to it, and checks it against the disk.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isLifeboatError } from '../../src/core/errors.js';
import type { ChangedExtent, ChangeTracker, Cut } from '../../src/changetracking/tracker.js';

const CHUNK = 4096;
const MAX_EXTENT = 16 * 1024 * 1024;

export interface TrackerUnderTest {
  /** A tracker over a fresh disk whose content is all zeros; open() not yet called. */
  readonly tracker: ChangeTracker;
  /** The disk's size; the suite writes inside it (≥ 64 KiB). */
  readonly sizeBytes: number;
  /** Writes to the disk the way its user would (visible to the tracker when it resolves). */
  write(offset: number, data: Buffer): Promise<void>;
  /** Reads the disk's current content. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * A restart: the current tracker is abandoned as a killed process's would be
   * (closing it is allowed) and a new one over the same disk and state is
   * returned, open() not yet called.
   */
  reopen(): Promise<ChangeTracker>;
  cleanup(): Promise<void>;
}

export interface ContractOptions {
  /** Runs of the property test (default 25). */
  readonly numRuns?: number;
}

interface Drained {
  readonly extents: ChangedExtent[];
  readonly bytes: number;
}

/** Reads a cut's changes to the end, checking the shape the contract promises. */
async function drain(cut: Cut, sizeBytes: number): Promise<Drained> {
  assert.equal(cut.sizeBytes, sizeBytes, 'cut.sizeBytes is the disk size');
  assert.match(cut.id, /^[A-Za-z0-9_-]{1,64}$/, 'cut id');
  const extents: ChangedExtent[] = [];
  let end = 0;
  let bytes = 0;
  for await (const e of cut.changes()) {
    assert.ok(Buffer.isBuffer(e.data), 'extent data is a Buffer');
    assert.equal(e.offset % CHUNK, 0, `extent offset ${e.offset} is chunk aligned`);
    assert.ok(e.data.length > 0 && e.data.length <= MAX_EXTENT, `extent length ${e.data.length} in (0, 16 MiB]`);
    assert.ok(e.offset >= end, `extents ascend without overlap (${e.offset} after ${end})`);
    assert.ok(e.offset + e.data.length <= sizeBytes, 'extent inside the disk');
    end = e.offset + e.data.length;
    bytes += e.data.length;
    extents.push({ offset: e.offset, data: Buffer.from(e.data) });
  }
  return { extents, bytes };
}

function applyTo(replica: Buffer, extents: readonly ChangedExtent[]): void {
  for (const e of extents) e.data.copy(replica, e.offset);
}

/** The chunks (indices) an extent list touches. */
function chunksOf(extents: readonly ChangedExtent[]): Set<number> {
  const out = new Set<number>();
  for (const e of extents) for (let c = e.offset / CHUNK; c * CHUNK < e.offset + e.data.length; c++) out.add(c);
  return out;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 16) & 0xff | 1; // never zero: a written chunk is never all zero by accident
  }
  return b;
}

function assertSameDisk(replica: Buffer, disk: Buffer, message: string): void {
  if (replica.equals(disk)) return;
  let first = 0;
  while (replica[first] === disk[first]) first++;
  assert.fail(`${message}: replica differs from the disk first at byte ${first} (chunk ${Math.floor(first / CHUNK)})`);
}

export function trackerContractSuite(name: string, factory: () => Promise<TrackerUnderTest>, options: ContractOptions = {}): void {
  const withDisk = (title: string, fn: (d: TrackerUnderTest) => Promise<void>) =>
    test(`${name} contract: ${title}`, async () => {
      const d = await factory();
      try {
        await fn(d);
      } finally {
        await d.tracker.close().catch(() => undefined);
        await d.cleanup();
      }
    });

  withDisk('the first cut after a first start is full and carries every non-zero byte', async (d) => {
    const opened = await d.tracker.open();
    assert.equal(opened.continuity, 'lost', 'a first start cannot vouch for earlier writes');
    const last = d.sizeBytes - 100;
    await d.write(0, pattern(100, 1));
    await d.write(3 * CHUNK + 10, pattern(CHUNK * 2, 2));
    await d.write(last, pattern(100, 3));
    const cut = await d.tracker.cut();
    assert.equal(cut.full, true, 'the cut after lost continuity is a full compare');
    const { extents } = await drain(cut, d.sizeBytes);
    const replica = Buffer.alloc(d.sizeBytes);
    applyTo(replica, extents);
    assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after the first cut');
    const chunks = chunksOf(extents);
    for (const c of [0, 3, 4, 5, Math.floor(last / CHUNK)]) assert.ok(chunks.has(c), `written chunk ${c} reported`);
    await cut.commit();
  });

  withDisk('writes after cut() belong to the next cut', async (d) => {
    await d.tracker.open();
    await d.write(CHUNK, pattern(CHUNK, 10));
    const cut = await d.tracker.cut();
    const atCut = await d.read(0, d.sizeBytes);
    const replica = Buffer.alloc(d.sizeBytes);
    if (d.tracker.capabilities.pointInTime) {
      // Written before the changes are read: a point-in-time cut must not show it.
      await d.write(CHUNK, pattern(CHUNK, 11));
      await d.write(8 * CHUNK, pattern(CHUNK, 12));
    }
    const first = await drain(cut, d.sizeBytes);
    await d.write(9 * CHUNK, pattern(CHUNK, 13));
    await d.write(CHUNK, pattern(CHUNK, 14));
    applyTo(replica, first.extents);
    assertSameDisk(replica, atCut, 'the cut shows the disk as it was at cut()');
    await cut.commit();
    const next = await d.tracker.cut();
    const second = await drain(next, d.sizeBytes);
    applyTo(replica, second.extents);
    assertSameDisk(replica, await d.read(0, d.sizeBytes), 'the next cut carries the later writes');
    const chunks = chunksOf(second.extents);
    assert.ok(chunks.has(1) && chunks.has(9), 'later writes reported by the next cut');
    await next.commit();
  });

  withDisk('an aborted cut is reported again, merged with newer writes', async (d) => {
    await d.tracker.open();
    const replica = Buffer.alloc(d.sizeBytes);
    await d.write(0, pattern(CHUNK, 20));
    const c1 = await d.tracker.cut();
    applyTo(replica, (await drain(c1, d.sizeBytes)).extents);
    await c1.commit();
    await d.write(2 * CHUNK, pattern(2 * CHUNK, 21));
    const c2 = await d.tracker.cut();
    const aborted = await drain(c2, d.sizeBytes);
    assert.deepEqual([...chunksOf(aborted.extents)].sort(), [2, 3]);
    await c2.abort();
    await c2.abort(); // idempotent
    await d.write(6 * CHUNK, pattern(CHUNK, 22));
    const c3 = await d.tracker.cut();
    const again = await drain(c3, d.sizeBytes);
    const chunks = chunksOf(again.extents);
    for (const c of [2, 3, 6]) assert.ok(chunks.has(c), `chunk ${c} reported after the abort`);
    applyTo(replica, again.extents);
    assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after the cut following an abort');
    await c3.commit();
  });

  withDisk('a committed cut is not reported again', async (d) => {
    await d.tracker.open();
    await d.write(5 * CHUNK, pattern(3 * CHUNK, 30));
    const c1 = await d.tracker.cut();
    const first = await drain(c1, d.sizeBytes);
    assert.ok(first.extents.length > 0);
    await c1.commit();
    await c1.commit(); // idempotent
    const c2 = await d.tracker.cut();
    const second = await drain(c2, d.sizeBytes);
    assert.deepEqual(second.extents, [], 'nothing written since the committed cut');
    await c2.commit();
    await d.write(7 * CHUNK, pattern(10, 31));
    const c3 = await d.tracker.cut();
    const third = await drain(c3, d.sizeBytes);
    assert.deepEqual([...chunksOf(third.extents)], [7], 'only the new write');
    await c3.commit();
  });

  withDisk('a chunk changed back after an aborted cut is still made correct', async (d) => {
    await d.tracker.open();
    const replica = Buffer.alloc(d.sizeBytes);
    const a = pattern(CHUNK, 40);
    await d.write(4 * CHUNK, a);
    const c1 = await d.tracker.cut();
    applyTo(replica, (await drain(c1, d.sizeBytes)).extents);
    await c1.commit();
    await d.write(4 * CHUNK, pattern(CHUNK, 41));
    await d.write(5 * CHUNK, pattern(CHUNK, 42));
    const c2 = await d.tracker.cut();
    await drain(c2, d.sizeBytes);
    await c2.abort();
    await d.write(4 * CHUNK, a); // back to what the replica holds
    const c3 = await d.tracker.cut();
    applyTo(replica, (await drain(c3, d.sizeBytes)).extents);
    await c3.commit();
    assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after the changed-back chunk');
    // And the other way: the replica took the new content, then the disk went back.
    await d.write(4 * CHUNK, pattern(CHUNK, 43));
    const c4 = await d.tracker.cut();
    applyTo(replica, (await drain(c4, d.sizeBytes)).extents);
    await c4.commit();
    await d.write(4 * CHUNK, a);
    const c5 = await d.tracker.cut();
    const back = await drain(c5, d.sizeBytes);
    assert.ok(chunksOf(back.extents).has(4), 'a chunk written back to older content is reported');
    applyTo(replica, back.extents);
    await c5.commit();
    assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after writing older content back');
  });

  withDisk('data overwritten with zeros is reported with zero data', async (d) => {
    await d.tracker.open();
    const replica = Buffer.alloc(d.sizeBytes);
    await d.write(2 * CHUNK, pattern(3 * CHUNK, 50));
    const c1 = await d.tracker.cut();
    applyTo(replica, (await drain(c1, d.sizeBytes)).extents);
    await c1.commit();
    await d.write(2 * CHUNK, Buffer.alloc(2 * CHUNK + 7));
    const c2 = await d.tracker.cut();
    const { extents } = await drain(c2, d.sizeBytes);
    assert.ok(chunksOf(extents).has(2) && chunksOf(extents).has(3) && chunksOf(extents).has(4));
    applyTo(replica, extents);
    await c2.commit();
    assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after zeroing');
  });

  withDisk('one cut is open at a time', async (d) => {
    await d.tracker.open();
    const c1 = await d.tracker.cut();
    await assert.rejects(d.tracker.cut(), (err) => isLifeboatError(err, 'CONFLICT'));
    await drain(c1, d.sizeBytes);
    await c1.abort();
    const c2 = await d.tracker.cut();
    assert.notEqual(c2.id, c1.id, 'every cut has its own id');
    assert.ok(Number.isFinite(c2.estimatedBytes) && c2.estimatedBytes >= 0, 'estimatedBytes is a byte count');
    await drain(c2, d.sizeBytes);
    await c2.commit();
    await d.tracker.close();
    await d.tracker.close(); // idempotent
  });

  withDisk('after a restart following a commit: continuous, or a full compare that reports only what differs', async (d) => {
    await d.tracker.open();
    const replica = Buffer.alloc(d.sizeBytes);
    await d.write(CHUNK, pattern(5 * CHUNK, 60));
    const c1 = await d.tracker.cut();
    applyTo(replica, (await drain(c1, d.sizeBytes)).extents);
    await c1.commit();
    const t2 = await d.reopen();
    const opened = await t2.open();
    assert.equal(opened.pendingCutId, undefined, 'nothing pending after a commit');
    const c2 = await t2.cut();
    if (opened.continuity === 'lost') assert.equal(c2.full, true, 'lost continuity means a full compare');
    const quiet = await drain(c2, d.sizeBytes);
    assert.deepEqual(quiet.extents, [], 'nothing differs from the replica, nothing reported');
    await c2.commit();
    await d.write(20 * CHUNK, pattern(CHUNK, 61));
    const c3 = await t2.cut();
    const next = await drain(c3, d.sizeBytes);
    assert.deepEqual([...chunksOf(next.extents)], [20]);
    applyTo(replica, next.extents);
    await c3.commit();
    assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after the restart');
  });

  for (const outcome of ['abort', 'commit'] as const) {
    withDisk(`a cut interrupted by a restart behaves as aborted, or is settled (${outcome}) by the agent`, async (d) => {
      await d.tracker.open();
      const replica = Buffer.alloc(d.sizeBytes);
      await d.write(0, pattern(CHUNK, 70));
      const c1 = await d.tracker.cut();
      applyTo(replica, (await drain(c1, d.sizeBytes)).extents);
      await c1.commit();
      await d.write(3 * CHUNK, pattern(2 * CHUNK, 71));
      const c2 = await d.tracker.cut();
      const staged = await drain(c2, d.sizeBytes);
      // The process dies here, before commit() or abort().
      const t2 = await d.reopen();
      const opened = await t2.open();
      if (opened.pendingCutId !== undefined) assert.equal(opened.pendingCutId, c2.id, 'the pending cut is the interrupted one');
      if (outcome === 'commit') applyTo(replica, staged.extents); // the agent knows its last segment was acknowledged
      await t2.settle(c2.id, outcome);
      await t2.settle(c2.id, outcome); // idempotent
      const c3 = await t2.cut();
      const next = await drain(c3, d.sizeBytes);
      const chunks = chunksOf(next.extents);
      if (outcome === 'abort' || opened.pendingCutId === undefined) {
        assert.ok(chunks.has(3) && chunks.has(4), 'the interrupted changes are reported again');
      } else {
        assert.ok(!chunks.has(3) && !chunks.has(4), 'the settled-committed changes are not reported again');
      }
      applyTo(replica, next.extents);
      await c3.commit();
      assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after the interrupted cut');
    });
  }

  test(`${name} contract: random writes, commits, aborts and restarts keep the replica equal to the disk at each committed cut`, async () => {
    const write = fc.record({
      at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
      length: fc.integer({ min: 1, max: 3 * CHUNK + 100 }),
      fill: fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 3 })), // -1 zeros, else one of four patterns
    });
    const op = fc.oneof(
      { weight: 4, arbitrary: write.map((w) => ({ t: 'write' as const, w })) },
      {
        weight: 3,
        arbitrary: fc.record({
          t: fc.constant('cut' as const),
          outcome: fc.constantFrom('commit', 'abort', 'crash-commit', 'crash-abort', 'drop'),
          during: fc.option(write, { nil: undefined }),
          after: fc.option(write, { nil: undefined }),
        }),
      },
      { weight: 1, arbitrary: fc.constant({ t: 'reopen' as const }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
        const d = await factory();
        let tracker = d.tracker;
        const replica = Buffer.alloc(d.sizeBytes);
        const doWrite = async (w: { at: number; length: number; fill: number }) => {
          const offset = Math.min(Math.floor(w.at * d.sizeBytes), d.sizeBytes - 1);
          const length = Math.min(w.length, d.sizeBytes - offset);
          await d.write(offset, w.fill < 0 ? Buffer.alloc(length) : pattern(length, 1000 + w.fill));
        };
        const restart = async () => {
          tracker = await d.reopen();
          return tracker.open();
        };
        try {
          await tracker.open();
          for (const o of ops) {
            if (o.t === 'write') {
              await doWrite(o.w);
            } else if (o.t === 'reopen') {
              const opened = await restart();
              assert.equal(opened.pendingCutId, undefined, 'no cut was pending');
            } else {
              const cut = await tracker.cut();
              const atCut = await d.read(0, d.sizeBytes);
              if (o.during && tracker.capabilities.pointInTime) await doWrite(o.during);
              if (o.outcome === 'drop') {
                // Never read: the agent gave up before shipping anything.
                await cut.abort();
                continue;
              }
              const { extents } = await drain(cut, d.sizeBytes);
              if (o.after) await doWrite(o.after);
              if (o.outcome === 'commit') {
                await cut.commit();
              } else if (o.outcome === 'abort') {
                await cut.abort();
              } else {
                const opened = await restart();
                if (opened.pendingCutId !== undefined) assert.equal(opened.pendingCutId, cut.id);
                await tracker.settle(cut.id, o.outcome === 'crash-commit' ? 'commit' : 'abort');
              }
              if (o.outcome === 'commit' || o.outcome === 'crash-commit') {
                applyTo(replica, extents);
                assertSameDisk(replica, atCut, `after committing cut ${cut.id}`);
              }
            }
          }
          const last = await tracker.cut();
          applyTo(replica, (await drain(last, d.sizeBytes)).extents);
          await last.commit();
          assertSameDisk(replica, await d.read(0, d.sizeBytes), 'after the final cut');
        } finally {
          await tracker.close().catch(() => undefined);
          await d.cleanup();
        }
      }),
      { numRuns: options.numRuns ?? 25 },
    );
  });
}
