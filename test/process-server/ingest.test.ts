import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../../src/format/segment.js';
import { segmentFileName } from '../../src/process-server/spool.js';
import { rejectsCode } from '../format/fuzz.js';
import { DISK, DISK2, harness, makeSegment, spoolFiles, storedSegments, waitFor } from './harness.js';

test('many segments over one connection land in the store in full; the spool empties', async () => {
  const h = await harness();
  try {
    const client = await h.connect({ disks: [{ disk: DISK, generation: 1 }, { disk: DISK2, generation: 1 }] });
    assert.equal(client.ackedSequence(DISK), 0);
    const n = 60;
    const sent = [];
    const acks = [];
    for (let s = 1; s <= n; s++) {
      const flags = s % 3 === 1 ? SEGMENT_PARTIAL : s % 3 === 2 ? SEGMENT_PARTIAL | SEGMENT_CONTINUES : SEGMENT_CONTINUES | SEGMENT_APP_CONSISTENT;
      for (const disk of [DISK, DISK2]) {
        const seg = makeSegment(s, { disk, flags });
        sent.push(seg);
        acks.push(client.sendSegment(seg));
      }
      assert.ok(client.inFlight <= 8);
    }
    const got = await Promise.all(acks);
    assert.deepEqual(
      got.filter((a) => a.disk === DISK).map((a) => a.sequence),
      Array.from({ length: n }, (_, i) => i + 1),
    );
    assert.equal(client.ackedSequence(DISK), n);
    await h.server.drained();
    for (const disk of [DISK, DISK2]) {
      const stored = await storedSegments(h.repo, disk);
      const want = sent.filter((s) => s.disk === disk);
      assert.equal(stored.length, n);
      stored.forEach((seg, i) => {
        const w = want[i]!;
        assert.equal(seg.sequence, w.sequence);
        assert.equal(seg.flags ?? 0, w.flags);
        assert.equal(seg.createdAtMs, w.capturedAtMs);
        assert.deepEqual(
          seg.extents.map((e) => [e.offset, e.data.toString('base64')]),
          w.extents.map((e) => [e.offset, e.data.toString('base64')]),
        );
      });
    }
    assert.deepEqual(await spoolFiles(h.spoolDir), []);
    const stats = h.server.stats();
    assert.equal(stats.segmentsIn, 2 * n);
    assert.equal(stats.segmentsUploaded, 2 * n);
    assert.equal(stats.spoolUsedBytes, 0);
    assert.equal(stats.uploadLagMs, 0);
    assert.equal(stats.connectedAgents, 1);
    assert.equal(stats.uploadErrors, 0);
    assert.ok(stats.bytesIn > 2 * n * 64 * 1024);
    await client.close();
    await waitFor('the session to end', () => h.server.stats().connectedAgents === 0);

    // A new connection resumes after the last acknowledged sequence.
    const again = await h.connect();
    assert.equal(again.ackedSequence(DISK), n);
    await again.sendSegment(makeSegment(n + 1));
    await again.close();
  } finally {
    await h.cleanup();
  }
});

test('ACK comes only once the segment is durable in the spool', async () => {
  const h = await harness();
  const open = (): void => h.gate.unblock();
  h.gate.block(); // uploads block
  try {
    const client = await h.connect();
    for (let s = 1; s <= 5; s++) {
      const ack = await client.sendSegment(makeSegment(s));
      const file = join(h.spoolDir, DISK, '1', segmentFileName(ack.sequence));
      assert.ok(existsSync(file), `spool file of ${ack.sequence} exists when its ACK arrives`);
      assert.ok(!existsSync(`${file}.tmp`));
    }
    assert.equal(h.server.stats().spooledSegments, 5);
    assert.ok(h.server.stats().spoolUsedBytes > 5 * 64 * 1024);
    assert.equal((await storedSegments(h.repo)).length, 0);
    open();
    await h.server.drained();
    assert.equal((await storedSegments(h.repo)).length, 5);
    assert.deepEqual(await spoolFiles(h.spoolDir), []);
    await client.close();
  } finally {
    open();
    await h.cleanup();
  }
});

test('a full spool answers SPOOL_FULL (retryable) and stores nothing more; acked segments stay', async () => {
  const h = await harness({ serverOptions: { spoolLimitBytes: 300 * 1024 } });
  const open = (): void => h.gate.unblock();
  h.gate.block();
  try {
    const client = await h.connect();
    await client.sendSegment(makeSegment(1, { sizeBytes: 128 * 1024 }));
    await client.sendSegment(makeSegment(2, { sizeBytes: 128 * 1024 }));
    const err = await rejectsCode(client.sendSegment(makeSegment(3, { sizeBytes: 128 * 1024 })), 'SPOOL_FULL');
    assert.equal(err.retryable, true);
    assert.equal(err.details.sequence, 3);
    assert.equal((await spoolFiles(h.spoolDir)).length, 2);
    assert.equal(h.server.stats().spoolState, 'warning');
    open();
    await h.server.drained();
    const again = await h.connect();
    assert.equal(again.ackedSequence(DISK), 2);
    await again.sendSegment(makeSegment(3, { sizeBytes: 128 * 1024 }));
    await again.close();
    await h.server.drained();
    assert.deepEqual(
      (await storedSegments(h.repo)).map((s) => s.sequence),
      [1, 2, 3],
    );
  } finally {
    open();
    await h.cleanup();
  }
});

test('a second connection for a disk replaces the first cleanly', async () => {
  const h = await harness();
  try {
    const first = await h.connect();
    await first.sendSegment(makeSegment(1));
    const second = await h.connect();
    assert.equal(second.ackedSequence(DISK), 1);
    const ended = await first.closed;
    assert.equal(ended?.code, 'CONFLICT');
    await second.sendSegment(makeSegment(2));
    await second.close();
    await h.server.drained();
    assert.deepEqual(
      (await storedSegments(h.repo)).map((s) => s.sequence),
      [1, 2],
    );
  } finally {
    await h.cleanup();
  }
});
