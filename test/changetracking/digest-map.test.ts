import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile, readFile, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { blake3 } from '@napi-rs/blake-hash';
import fc from 'fast-check';
import { isLifeboatError } from '../../src/core/errors.js';
import { CHUNK_BYTES, DigestMap, UNKNOWN_DIGEST, ZERO_DIGEST, chunkDigest } from '../../src/changetracking/digest-map.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-digest-map-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const d = (n: number) => Buffer.alloc(16, n);

async function stageAndApply(map: DigestMap, cutId: string, sizeBytes: number, runs: [number, Buffer][]): Promise<void> {
  const p = await map.stage(cutId, sizeBytes);
  for (const [first, digests] of runs) await p.add(first, digests);
  await p.seal();
  assert.equal(await map.apply(cutId), true);
}

test('digest map: chunk digests are truncated BLAKE3, all-zero chunks map to the zero digest', () => {
  const data = Buffer.alloc(CHUNK_BYTES, 3);
  assert.deepEqual(chunkDigest(data), blake3(data).subarray(0, 16));
  assert.deepEqual(chunkDigest(Buffer.alloc(CHUNK_BYTES)), ZERO_DIGEST);
  assert.deepEqual(chunkDigest(Buffer.alloc(100)), ZERO_DIGEST, 'a partial zero chunk too');
  assert.notDeepEqual(chunkDigest(Buffer.alloc(100, 1)), UNKNOWN_DIGEST);
});

test('digest map: a new map knows nothing; applied digests survive reopening', async () => {
  await withDir(async (dir) => {
    const map = await DigestMap.open(dir);
    assert.equal(map.exists, false);
    assert.deepEqual(await map.read(0, 2), Buffer.concat([UNKNOWN_DIGEST, UNKNOWN_DIGEST]));
    await stageAndApply(map, 'cut-1', 10 * CHUNK_BYTES, [[2, Buffer.concat([d(1), d(2)])], [7, d(7)]]);
    await map.close();
    const again = await DigestMap.open(dir);
    assert.equal(again.exists, true);
    assert.equal(again.sizeBytes, 10 * CHUNK_BYTES);
    const all = await again.read(0, 11);
    const expect = [UNKNOWN_DIGEST, UNKNOWN_DIGEST, d(1), d(2), UNKNOWN_DIGEST, UNKNOWN_DIGEST, UNKNOWN_DIGEST, d(7), UNKNOWN_DIGEST, UNKNOWN_DIGEST, UNKNOWN_DIGEST];
    assert.deepEqual(all, Buffer.concat(expect), 'unstaged chunks stay unknown, past the end reads unknown');
    assert.deepEqual(await again.pending(), [], 'the pending file is gone once applied');
    await again.close();
  });
});

test('digest map: staged digests are invisible until applied; drop forgets them; apply is idempotent', async () => {
  await withDir(async (dir) => {
    const map = await DigestMap.open(dir);
    await stageAndApply(map, 'a', 4 * CHUNK_BYTES, [[0, Buffer.concat([d(1), d(1), d(1), d(1)])]]);
    const p = await map.stage('b', 4 * CHUNK_BYTES);
    await p.add(1, d(9));
    assert.deepEqual(await map.pending(), [], 'an unsealed staging is not pending');
    await p.seal();
    assert.deepEqual(await map.pending(), ['b']);
    assert.deepEqual(await map.read(1, 1), d(1));
    await map.drop('b');
    await map.drop('b');
    assert.equal(await map.apply('b'), false, 'a dropped cut applies nothing');
    assert.deepEqual(await map.read(1, 1), d(1));
    const q = await map.stage('c', 4 * CHUNK_BYTES);
    await q.add(3, d(5));
    await q.seal();
    assert.equal(await map.apply('c'), true);
    assert.equal(await map.apply('c'), false);
    assert.deepEqual(await map.read(0, 4), Buffer.concat([d(1), d(1), d(1), d(5)]));
    await map.close();
  });
});

test('digest map: a crash in the middle of applying is repaired by applying again', async () => {
  await withDir(async (dir) => {
    const map = await DigestMap.open(dir);
    await stageAndApply(map, 'a', 8 * CHUNK_BYTES, [[0, Buffer.alloc(8 * 16, 1)]]);
    const p = await map.stage('b', 12 * CHUNK_BYTES);
    await p.add(6, Buffer.concat([d(2), d(3), d(4)]));
    await p.add(11, d(5));
    await p.seal();
    const pendingBytes = await readFile(join(dir, 'pending-b.v1'));
    await map.apply('b');
    await map.close();
    // Simulate the crash: the map was partly written, the pending file still there, map.json older.
    await writeFile(join(dir, 'pending-b.v1'), pendingBytes);
    await writeFile(join(dir, 'map.json'), JSON.stringify({ version: 1, chunkBytes: 4096, sizeBytes: 8 * CHUNK_BYTES }));
    const again = await DigestMap.open(dir);
    assert.deepEqual(await again.pending(), ['b']);
    await again.apply('b');
    assert.equal(again.sizeBytes, 12 * CHUNK_BYTES);
    assert.deepEqual(
      await again.read(5, 7),
      Buffer.concat([d(1), d(2), d(3), d(4), UNKNOWN_DIGEST, UNKNOWN_DIGEST, d(5)]),
    );
    await again.close();
  });
});

test('digest map: an interrupted staging leaves nothing pending; a damaged pending file is refused', async () => {
  await withDir(async (dir) => {
    const map = await DigestMap.open(dir);
    const p = await map.stage('x', CHUNK_BYTES);
    await p.add(0, d(1));
    await map.close(); // the process dies before seal()
    const again = await DigestMap.open(dir);
    assert.deepEqual(await again.pending(), []);
    assert.deepEqual(await readdir(dir).then((n) => n.filter((x) => x.endsWith('.tmp'))), [], 'temp files are cleaned');
    const q = await again.stage('y', CHUNK_BYTES);
    await q.add(0, d(1));
    await q.seal();
    const path = join(dir, 'pending-y.v1');
    const bytes = await readFile(path);
    bytes[30] = (bytes[30] ?? 0) ^ 0x40;
    await writeFile(path, bytes);
    await assert.rejects(again.apply('y'), (err) => isLifeboatError(err, 'TRACKER_FAILED'));
    await truncate(path, 30);
    await assert.rejects(again.apply('y'), (err) => isLifeboatError(err, 'TRACKER_FAILED'));
    assert.equal(again.exists, false, 'nothing was applied');
    await again.close();
  });
});

test('digest map: growing makes new chunks unknown, a partial last chunk whose length changes becomes unknown', async () => {
  await withDir(async (dir) => {
    const map = await DigestMap.open(dir);
    const size = 3 * CHUNK_BYTES + 100;
    await stageAndApply(map, 'a', size, [[0, Buffer.concat([d(1), d(2), d(3), d(4)])]]);
    assert.deepEqual(await map.read(3, 1), d(4));
    await map.resize(6 * CHUNK_BYTES);
    assert.deepEqual(await map.read(0, 6), Buffer.concat([d(1), d(2), d(3), UNKNOWN_DIGEST, UNKNOWN_DIGEST, UNKNOWN_DIGEST]));
    await map.resize(CHUNK_BYTES + 5);
    assert.equal(map.chunkCount, 2);
    assert.deepEqual(await map.read(0, 3), Buffer.concat([d(1), UNKNOWN_DIGEST, UNKNOWN_DIGEST]));
    await map.resize(4 * CHUNK_BYTES);
    assert.deepEqual(await map.read(0, 4), Buffer.concat([d(1), UNKNOWN_DIGEST, UNKNOWN_DIGEST, UNKNOWN_DIGEST]), 'old entries past a shrink never come back');
    await map.close();
    const again = await DigestMap.open(dir);
    assert.equal(again.sizeBytes, 4 * CHUNK_BYTES);
    await again.close();
  });
});

test('digest map: refuses cut ids that are not file-name safe', async () => {
  await withDir(async (dir) => {
    const map = await DigestMap.open(dir);
    await assert.rejects(map.stage('../x', 0), (err) => isLifeboatError(err, 'INTERNAL'));
    await map.close();
  });
});

test('digest map: property: a sequence of staged, applied and dropped cuts gives the model map', async () => {
  const step = fc.record({
    size: fc.integer({ min: 0, max: 40 * CHUNK_BYTES }),
    runs: fc.array(fc.record({ first: fc.nat(45), n: fc.integer({ min: 1, max: 6 }), v: fc.integer({ min: 1, max: 250 }) }), { maxLength: 5 }),
    outcome: fc.constantFrom('apply', 'drop', 'apply-twice', 'reopen-then-apply'),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), async (steps) => {
      await withDir(async (dir) => {
        let map = await DigestMap.open(dir);
        let model: Buffer[] = [];
        let i = 0;
        for (const s of steps) {
          const id = `c${i++}`;
          const count = Math.ceil(s.size / CHUNK_BYTES);
          const p = await map.stage(id, s.size);
          const writes: [number, Buffer][] = [];
          for (const r of s.runs) {
            const n = Math.min(r.n, count - r.first);
            if (n <= 0) continue;
            const digests = Buffer.concat(Array.from({ length: n }, () => d(r.v)));
            await p.add(r.first, digests);
            writes.push([r.first, digests]);
          }
          await p.seal();
          if (s.outcome === 'drop') {
            await map.drop(id);
            continue;
          }
          if (s.outcome === 'reopen-then-apply') {
            await map.close();
            map = await DigestMap.open(dir);
          }
          await map.apply(id);
          if (s.outcome === 'apply-twice') await map.apply(id);
          // Model: resize, then the staged entries in order (a later one for the same chunk wins).
          const written = new Map<number, Buffer>();
          const next: Buffer[] = [];
          for (let c = 0; c < count; c++) next.push(model[c] ?? UNKNOWN_DIGEST);
          model = next;
          for (const [first, digests] of writes) {
            for (let k = 0; k * 16 < digests.length; k++) {
              model[first + k] = digests.subarray(k * 16, k * 16 + 16);
              written.set(first + k, digests.subarray(k * 16, k * 16 + 16));
            }
          }
          const got = await map.read(0, count);
          for (let c = 0; c < count; c++) {
            const m = model[c] ?? UNKNOWN_DIGEST;
            const g = got.subarray(c * 16, c * 16 + 16);
            // A partial last chunk may have been made unknown by a size change; staged entries always win.
            if (!g.equals(m)) assert.ok(g.equals(UNKNOWN_DIGEST), `chunk ${c}: ${g.toString('hex')} vs model ${m.toString('hex')}`);
            if (!g.equals(m)) model[c] = UNKNOWN_DIGEST;
          }
          for (const [c, digest] of written) assert.deepEqual(got.subarray(c * 16, c * 16 + 16), digest, `staged chunk ${c}`);
        }
        await map.close();
      });
    }),
    { numRuns: 40 },
  );
});
