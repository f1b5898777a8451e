import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newDiskIndex } from '../../src/format/disk-index.js';
import { FakeClock, memoryRepo } from '../helpers/store.js';

test('points committed within one millisecond list in commit order, and the last is the latest', async () => {
  // Journal processing, fencing and gc all take "the newest point" to be the last one committed.
  const clock = new FakeClock();
  const { repo } = await memoryRepo({ clock });
  const committed: string[] = [];
  for (let i = 0; i < 10; i++) {
    const m = await repo.commitPoint(newDiskIndex(0, repo.chunkSizeBytes), {
      disk: 'vm1',
      diskSizeBytes: 0,
      chunkSizeBytes: repo.chunkSizeBytes,
      consistency: 'crash',
      parentPointId: committed[committed.length - 1] ?? null,
      source: { generation: 0, lastSequence: i },
      origin: 'journal',
      stats: { dataChunks: 0, zeroChunks: 0, newChunks: 0, bytesRead: 0, bytesStored: 0 },
    });
    committed.push(m.pointId);
  }
  assert.deepEqual((await repo.listPoints('vm1')).map((p) => p.source.lastSequence), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal((await repo.latestPoint('vm1'))?.pointId, committed[9]);
});
