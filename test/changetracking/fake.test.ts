import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isLifeboatError } from '../../src/core/errors.js';
import { FakeDisk } from '../../src/changetracking/fake/fake-tracker.js';
import { trackerContractSuite } from './contract.js';

trackerContractSuite('fake', async () => {
  const disk = new FakeDisk({ sizeBytes: 256 * 1024 + 1000 });
  return {
    tracker: disk.tracker(),
    sizeBytes: disk.sizeBytes,
    write: async (offset, data) => disk.write(offset, data),
    read: async (offset, length) => disk.read(offset, length),
    reopen: async () => disk.tracker(),
    cleanup: async () => undefined,
  };
});

async function readAll(cut: { changes(): AsyncIterable<{ offset: number; data: Buffer }> }): Promise<{ offset: number; data: Buffer }[]> {
  const out: { offset: number; data: Buffer }[] = [];
  for await (const e of cut.changes()) out.push(e);
  return out;
}

test('fake: failNextCut makes cut() fail once, and nothing is lost', async () => {
  const disk = new FakeDisk({ sizeBytes: 64 * 1024, clock: () => 1234 });
  const t = disk.tracker();
  await t.open();
  disk.write(0, Buffer.from('hello'));
  disk.failNextCut();
  await assert.rejects(t.cut(), (err) => isLifeboatError(err, 'TRACKER_FAILED'));
  const cut = await t.cut();
  assert.equal(cut.capturedAtMs, 1234);
  const extents = await readAll(cut);
  assert.deepEqual(extents.map((e) => e.offset), [0]);
  assert.equal(extents[0]?.data.subarray(0, 5).toString(), 'hello');
  await cut.commit();
});

test('fake: a failure while reading changes leaves them for the next cut after abort', async () => {
  const disk = new FakeDisk({ sizeBytes: 64 * 1024 });
  const t = disk.tracker();
  await t.open();
  const first = await t.cut();
  await readAll(first);
  await first.commit();
  disk.write(0, Buffer.alloc(10, 1));
  disk.write(8192, Buffer.alloc(10, 2));
  disk.failNextCut({ during: 'changes', error: new Error('disk went away') });
  const broken = await t.cut();
  await assert.rejects(readAll(broken), /disk went away/);
  await assert.rejects(broken.commit(), (err) => isLifeboatError(err, 'INTERNAL'), 'a cut not read to the end cannot be committed');
  await broken.abort();
  const again = await t.cut();
  assert.deepEqual((await readAll(again)).map((e) => e.offset), [0, 8192]);
  await again.commit();
});

test('fake: loseContinuity makes the next open lost and the next cut a full compare of only differing chunks', async () => {
  const disk = new FakeDisk({ sizeBytes: 64 * 1024 });
  let t = disk.tracker();
  assert.equal((await t.open()).continuity, 'lost');
  disk.write(4096, Buffer.alloc(4096, 7));
  const c1 = await t.cut();
  await readAll(c1);
  await c1.commit();
  t = disk.tracker();
  assert.deepEqual(await t.open(), { continuity: 'continuous' });
  disk.loseContinuity('bitmap missing');
  t = disk.tracker();
  assert.deepEqual(await t.open(), { continuity: 'lost', reason: 'bitmap missing' });
  disk.write(3 * 4096, Buffer.alloc(1, 9));
  const c2 = await t.cut();
  assert.equal(c2.full, true);
  assert.deepEqual((await readAll(c2)).map((e) => e.offset), [3 * 4096]);
  await c2.commit();
  assert.ok(disk.replicaBytes().equals(disk.read(0, disk.sizeBytes)));
  const c3 = await t.cut();
  assert.equal(c3.full, false, 'continuity is back once a full cut is committed');
  await readAll(c3);
  await c3.commit();
});

test('fake: a tracker replaced by a restart refuses further use', async () => {
  const disk = new FakeDisk({ sizeBytes: 64 * 1024 });
  const t1 = disk.tracker();
  await t1.open();
  const cut = await t1.cut();
  await readAll(cut);
  const t2 = disk.tracker();
  await assert.rejects(cut.commit(), (err) => isLifeboatError(err, 'INTERNAL'));
  await assert.rejects(t1.cut(), (err) => isLifeboatError(err, 'INTERNAL'));
  const opened = await t2.open();
  assert.equal(opened.pendingCutId, cut.id);
  assert.deepEqual(disk.cuts.map((c) => c.outcome), ['open']);
  await t2.settle(cut.id, 'commit');
  assert.deepEqual(disk.cuts.map((c) => c.outcome), ['committed']);
  assert.equal((await t2.open()).pendingCutId, undefined);
});
