import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultStorage } from '../../src/storage/wrappers/faults.js';
import type { Storage } from '../../src/storage/storage.js';
import { writeSegment } from '../../src/store/journal.js';
import { DISK, harness, makeSegment, OutageStorage, spoolFiles, storedSegments, waitFor } from './harness.js';

test('a storage outage: the spool absorbs, ACKs continue, and after recovery everything lands', async () => {
  let outage!: OutageStorage;
  let faults!: FaultStorage;
  const probability: Partial<Record<'put' | 'get', number>> = {}; // set once the store is open
  const h = await harness({
    storage: (inner: Storage) => {
      outage = new OutageStorage(inner);
      // Besides the outage, random failures, some after the put took effect (the reply was lost).
      faults = new FaultStorage(outage, { seed: 7, failureProbability: probability, failurePoint: 'either' });
      return faults;
    },
  });
  try {
    const client = await h.connect();
    probability.put = 0.2;
    probability.get = 0.1;
    outage.down = true;
    const n = 40;
    const acks = [];
    for (let s = 1; s <= n; s++) acks.push(client.sendSegment(makeSegment(s)));
    await Promise.all(acks);
    assert.equal(client.ackedSequence(DISK), n);
    await waitFor('failed uploads', () => h.server.stats().uploadErrors >= 5);
    const during = h.server.stats();
    assert.equal(during.segmentsUploaded, 0);
    assert.equal(during.spooledSegments, n);
    assert.ok(during.spoolUsedBytes > n * 64 * 1024);
    assert.ok(during.uploadLagMs >= 0);
    assert.match(during.lastUploadError ?? '', /STORAGE_UNAVAILABLE/);
    assert.equal((await spoolFiles(h.spoolDir)).length, n);

    await new Promise((r) => setTimeout(r, 500)); // the outage lasts a while
    outage.down = false;
    await h.server.drained();
    probability.put = 0;
    probability.get = 0; // read back without faults
    const stored = await storedSegments(h.repo);
    assert.deepEqual(
      stored.map((s) => s.sequence),
      Array.from({ length: n }, (_, i) => i + 1),
    );
    stored.forEach((seg) => assert.ok(seg.extents[0]!.data.equals(makeSegment(seg.sequence).extents[0]!.data)));
    assert.deepEqual(await spoolFiles(h.spoolDir), []);
    const after = h.server.stats();
    assert.equal(after.segmentsUploaded, n);
    assert.equal(after.spoolUsedBytes, 0);
    assert.equal(after.uploadLagMs, 0);
    assert.ok(faults.injected.failures > 0, 'random faults were injected too');
    await client.close();
  } finally {
    await h.cleanup();
  }
});

test('a segment the store already holds: the same bytes are success, different bytes are kept and reported', async () => {
  const h = await harness();
  try {
    const client = await h.connect();
    assert.equal(client.ackedSequence(DISK), 0);
    // Sequence 1 reaches the store before the process server uploads it (a previous process put it and died
    // before deleting its spool file); under sequence 2 something else wrote another segment.
    const same = makeSegment(1);
    await writeSegment(h.repo, DISK, { generation: 1, sequence: 1, flags: same.flags, diskSizeBytes: same.diskSizeBytes, createdAtMs: same.capturedAtMs, extents: same.extents });
    await writeSegment(h.repo, DISK, { generation: 1, sequence: 2, diskSizeBytes: same.diskSizeBytes, createdAtMs: 1, extents: [{ offset: 0, data: Buffer.alloc(10, 1) }] });
    await client.sendSegment(same);
    await client.sendSegment(makeSegment(2));
    await h.server.drained();
    const stats = h.server.stats();
    assert.equal(stats.segmentsUploaded, 1);
    assert.equal(stats.uploadErrors, 1);
    assert.match(stats.lastUploadError ?? '', /CONFLICT/);
    const files = await spoolFiles(h.spoolDir);
    assert.equal(files.length, 1, 'the differing segment stays in the spool');
    assert.match(files[0]!, /0000000000000002\.seg$/);
    assert.equal(stats.spooledSegments, 1);
    const stored = await storedSegments(h.repo);
    assert.equal(stored[1]!.createdAtMs, 1, 'the stored segment was not replaced');
    // The next start does not lose it either.
    await h.restart();
    await h.server.drained();
    assert.equal((await spoolFiles(h.spoolDir)).length, 1);
    await client.close();
  } finally {
    await h.cleanup();
  }
});
