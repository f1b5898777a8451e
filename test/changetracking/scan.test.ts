import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isLifeboatError } from '../../src/core/errors.js';
import { CHUNK_BYTES, DigestMap, chunkDigest } from '../../src/changetracking/digest-map.js';
import { openTracker } from '../../src/changetracking/registry.js';
import { DiskFile } from '../../src/io/disk-file.js';
import { fullCompare, type CompareSource, type ComparedExtent } from '../../src/changetracking/scan/full-compare.js';
import { hashPool } from '../../src/changetracking/scan/hash-pool.js';
import { nativeSeek } from '../../src/io/native-seek.js';
import { ScanTracker } from '../../src/changetracking/scan/scan-tracker.js';
import type { ChangedExtent, Cut } from '../../src/changetracking/tracker.js';
import { trackerContractSuite } from './contract.js';

const MiB = 1024 * 1024;

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'lifeboat-scan-'));
}

async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const h = await open(path, 'r+');
  try {
    await h.write(data, 0, data.length, offset);
  } finally {
    await h.close();
  }
}

for (const replicaIsEmpty of [false, true]) {
trackerContractSuite(`scan (replicaIsEmpty: ${replicaIsEmpty})`, async () => {
  const dir = await tempDir();
  const disk = join(dir, 'disk.img');
  const sizeBytes = 256 * 1024 + 1000;
  await writeFile(disk, '');
  await truncate(disk, sizeBytes);
  const make = () => new ScanTracker({ path: disk, stateDir: join(dir, 'state'), readBytes: MiB, replicaIsEmpty });
  let current = make();
  return {
    tracker: current,
    sizeBytes,
    write: (offset, data) => writeAt(disk, offset, data),
    read: async (offset, length) => (await readFile(disk)).subarray(offset, offset + length),
    reopen: async () => {
      await current.close();
      current = make();
      return current;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
}

async function drain(cut: Cut): Promise<ChangedExtent[]> {
  const out: ChangedExtent[] = [];
  for await (const e of cut.changes()) out.push(e);
  return out;
}

async function withScan(sizeBytes: number, fn: (disk: string, tracker: ScanTracker, dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  const disk = join(dir, 'disk.img');
  await writeFile(disk, '');
  await truncate(disk, sizeBytes);
  const tracker = new ScanTracker({ path: disk, stateDir: join(dir, 'state'), replicaIsEmpty: true });
  try {
    await tracker.open();
    await fn(disk, tracker, dir);
  } finally {
    await tracker.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test('scan: a full disk is reported as extents of at most 16 MiB, then nothing once committed', async () => {
  await withScan(40 * MiB + 512, async (disk, tracker) => {
    await writeFile(disk, Buffer.alloc(40 * MiB + 512, 0x5a));
    const cut = await tracker.cut();
    assert.equal(cut.full, true);
    assert.equal(cut.estimatedBytes, 40 * MiB + 512);
    const extents = await drain(cut);
    assert.deepEqual(
      extents.map((e) => [e.offset, e.data.length]),
      [
        [0, 16 * MiB],
        [16 * MiB, 16 * MiB],
        [32 * MiB, 8 * MiB + 512],
      ],
    );
    await cut.commit();
    const again = await tracker.cut();
    assert.deepEqual(await drain(again), []);
    await again.commit();
  });
});

test('scan: holes are not read, and a hole where data was is reported as zeros', async (t) => {
  if (!nativeSeek()) assert.fail('the native addon (build/Release/lifeboat_native.node) is missing: run npm rebuild');
  await withScan(8 * MiB, async (disk, tracker) => {
    await writeAt(disk, 5 * MiB, Buffer.alloc(2 * CHUNK_BYTES, 7));
    const c1 = await tracker.cut();
    const first = await drain(c1);
    assert.deepEqual(first.map((e) => [e.offset, e.data.length]), [[5 * MiB, 2 * CHUNK_BYTES]]);
    await c1.commit();
    // Punch the data out: shrink then regrow leaves a hole where it was.
    await truncate(disk, 4 * MiB);
    await truncate(disk, 8 * MiB);
    const c2 = await tracker.cut();
    const holes = await drain(c2);
    assert.deepEqual(holes.map((e) => [e.offset, e.data.length]), [[5 * MiB, 2 * CHUNK_BYTES]]);
    assert.ok(holes[0]?.data.equals(Buffer.alloc(2 * CHUNK_BYTES)), 'zero data');
    await c2.commit();
    t.diagnostic('holes compared without reading');
  });
});

test('scan: with no map and a replica that may hold data, the first cut reports every chunk, zeros included', async () => {
  const dir = await tempDir();
  try {
    const disk = join(dir, 'disk.img');
    await writeFile(disk, '');
    await truncate(disk, 3 * MiB);
    await writeAt(disk, MiB, Buffer.alloc(10, 1));
    const tracker = new ScanTracker({ path: disk, stateDir: join(dir, 'state') });
    assert.deepEqual(await tracker.open(), { continuity: 'lost', reason: 'first start: no digest map yet' });
    const cut = await tracker.cut();
    const extents = await drain(cut);
    assert.equal(extents.reduce((n, e) => n + e.data.length, 0), 3 * MiB);
    await cut.commit();
    await tracker.close();
    const again = new ScanTracker({ path: disk, stateDir: join(dir, 'state') });
    assert.deepEqual(await again.open(), { continuity: 'continuous' });
    const quiet = await again.cut();
    assert.deepEqual(await drain(quiet), []);
    await quiet.commit();
    await again.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('scan: the disk growing and shrinking between cuts', async () => {
  await withScan(64 * 1024 + 100, async (disk, tracker) => {
    await writeAt(disk, 64 * 1024, Buffer.alloc(100, 3));
    const c1 = await tracker.cut();
    assert.deepEqual((await drain(c1)).map((e) => [e.offset, e.data.length]), [[64 * 1024, 100]]);
    await c1.commit();
    await truncate(disk, 96 * 1024); // grow: the partial chunk is now whole (still 100 bytes of 3 then zeros)
    const c2 = await tracker.cut();
    assert.equal(c2.sizeBytes, 96 * 1024);
    const grown = await drain(c2);
    // The old partial chunk and the new chunks are unknown to the map: shipped once (the new ones as zeros).
    assert.deepEqual(grown.map((e) => [e.offset, e.data.length]), [[64 * 1024, 32 * 1024]]);
    assert.ok(grown[0]?.data.subarray(100).equals(Buffer.alloc(32 * 1024 - 100)));
    await c2.commit();
    await writeAt(disk, 8 * 1024, Buffer.alloc(CHUNK_BYTES, 4));
    const cw = await tracker.cut();
    assert.deepEqual((await drain(cw)).map((e) => [e.offset, e.data.length]), [[8 * 1024, CHUNK_BYTES]]);
    await cw.commit();
    await truncate(disk, 10 * 1024);
    const c3 = await tracker.cut();
    assert.equal(c3.sizeBytes, 10 * 1024);
    const shrunk = await drain(c3);
    assert.deepEqual(shrunk.map((e) => [e.offset, e.data.length]), [[8 * 1024, 2 * 1024]], 'the new partial last chunk');
    await c3.commit();
    const c4 = await tracker.cut();
    assert.deepEqual(await drain(c4), []);
    await c4.commit();
  });
});

test('scan: each extent carries the digests of the bytes it yields, even when the disk changes while read', async () => {
  const dir = await tempDir();
  try {
    const size = 4 * MiB;
    const backing = Buffer.alloc(size, 1);
    let reads = 0;
    // A disk being written while the compare reads it: after each read, the whole disk changes.
    const source: CompareSource = {
      sizeBytes: size,
      extents: async (offset, length) => [{ offset, length, zero: false }],
      read: async (offset, length) => {
        const out = Buffer.from(backing.subarray(offset, offset + length));
        backing.fill(++reads + 1);
        return out;
      },
    };
    const map = await DigestMap.open(dir);
    const staging = await map.stage('c1', size);
    const seen: Buffer[] = [];
    for await (const e of fullCompare(source, map, { readBytes: MiB })) {
      for (let k = 0; k * CHUNK_BYTES < e.data.length; k++) {
        const chunk = e.data.subarray(k * CHUNK_BYTES, (k + 1) * CHUNK_BYTES);
        assert.deepEqual(e.digests.subarray(k * 16, k * 16 + 16), chunkDigest(chunk));
      }
      seen.push(e.data);
      await staging.add(e.offset / CHUNK_BYTES, e.digests);
    }
    const all = Buffer.concat(seen);
    assert.equal(all.length, size);
    assert.deepEqual([0, 1, 2, 3].map((m) => [all[m * MiB], all[(m + 1) * MiB - 1]]), [[1, 1], [2, 2], [3, 3], [4, 4]], 'each MiB as it was read');
    await staging.seal();
    await map.apply('c1');
    // The disk now holds 5 everywhere: everything differs from what was shipped.
    const next: number[] = [];
    for await (const e of fullCompare(source, map)) next.push(e.data.length);
    assert.equal(next.reduce((a, b) => a + b, 0), size);
    await map.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('scan: a disk that vanishes fails the cut with NOT_FOUND, and the tracker recovers', async () => {
  await withScan(64 * 1024, async (disk, tracker) => {
    await rm(disk);
    await assert.rejects(tracker.cut(), (err) => isLifeboatError(err, 'NOT_FOUND'));
    await writeFile(disk, Buffer.alloc(8192, 1));
    const cut = await tracker.cut();
    assert.equal((await drain(cut)).length, 1);
    await cut.commit();
  });
});

test('scan: a disk that shrinks while read fails the changes with TRACKER_FAILED; after abort nothing is staged', async () => {
  await withScan(48 * MiB, async (disk, tracker, dir) => {
    await writeFile(disk, Buffer.alloc(48 * MiB, 9));
    const cut = await tracker.cut();
    const it = cut.changes()[Symbol.asyncIterator]();
    await it.next();
    await truncate(disk, 1 * MiB);
    await assert.rejects(
      (async () => {
        for (let r = await it.next(); !r.done; r = await it.next());
      })(),
      (err) => isLifeboatError(err, 'TRACKER_FAILED'),
    );
    await assert.rejects(cut.commit(), (err) => isLifeboatError(err, 'INTERNAL'));
    await cut.abort();
    const map = await DigestMap.open(join(dir, 'state'));
    assert.deepEqual(await map.pending(), []);
    assert.equal(map.exists, false);
    await map.close();
  });
});

test('scan: worker threads and this thread compare alike; a disk shrinking under the workers fails with TRACKER_FAILED', async () => {
  const dir = await tempDir();
  try {
    const disk = join(dir, 'disk.img');
    const size = 24 * MiB + 3000;
    const content = Buffer.alloc(size);
    for (let i = 0; i < size; i += 3 * CHUNK_BYTES + 17) content.fill((i % 251) + 1, i, Math.min(size, i + 2 * CHUNK_BYTES));
    await writeFile(disk, content);
    const map = await DigestMap.open(join(dir, 'state'), { absent: 'zero' });
    const runs: ComparedExtent[][] = [];
    for (const pool of [null, hashPool()]) {
      const source = await DiskFile.open(disk);
      const got: ComparedExtent[] = [];
      for await (const e of fullCompare(source, map, { pool, readBytes: MiB })) got.push(e);
      await source.close();
      runs.push(got);
    }
    const [here, workers] = runs as [ComparedExtent[], ComparedExtent[]];
    assert.ok(here.length > 1);
    assert.deepEqual(
      workers.map((e) => [e.offset, e.data.toString('hex'), e.digests.toString('hex')]),
      here.map((e) => [e.offset, e.data.toString('hex'), e.digests.toString('hex')]),
    );
    const replica = Buffer.alloc(size);
    for (const e of workers) e.data.copy(replica, e.offset);
    assert.ok(replica.equals(content));
    const source = await DiskFile.open(disk);
    const it = fullCompare(source, map, { pool: hashPool(), readBytes: MiB });
    await it.next();
    await truncate(disk, MiB);
    await assert.rejects(
      (async () => {
        for (let r = await it.next(); !r.done; r = await it.next());
      })(),
      (err) => isLifeboatError(err, 'TRACKER_FAILED') && /shrink/.test((err as Error).message),
    );
    await source.close();
    await map.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('registry: scan is built from its spec; unknown kinds and missing paths are CONFIG_INVALID', async () => {
  const deps = { stateDir: '/nonexistent', clock: () => 0, replicaIsEmpty: true };
  const t = await openTracker({ kind: 'scan', path: '/dev/null' }, deps);
  assert.equal(t.kind, 'scan');
  assert.deepEqual(t.capabilities, { pointInTime: false, exactExtents: false });
  await assert.rejects(openTracker({ kind: 'lvm', path: '/dev/sda' }, deps), (err) => isLifeboatError(err, 'CONFIG_INVALID'));
  await assert.rejects(openTracker({ kind: 'scan' }, deps), (err) => isLifeboatError(err, 'CONFIG_INVALID'));
});
