import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { backupPath } from '../../src/store/backup.js';
import { PointReader } from '../../src/store/point-reader.js';
import { writeDisk } from '../../src/store/restore.js';
import { Repository } from '../../src/store/repository.js';
import { makeTempDir } from '../helpers/env.js';
import { sha256File, scribble, writeMixedImage } from '../helpers/images.js';
import { memoryRepo, PASS } from '../helpers/store.js';

test('backup then restore gives the same bytes, incremental stores only the change', async () => {
  const tmp = makeTempDir('br');
  try {
    const img = join(tmp.path, 'disk.img');
    const size = 16 * 2 ** 20 + 4096;
    writeMixedImage(img, size);
    const { repo, storage } = await memoryRepo();
    const first = await backupPath(repo, img, { disk: 'vm1' });
    assert.equal(first.manifest.parentPointId, null);
    assert.ok(first.newChunks > 0);
    const sum1 = sha256File(img);

    scribble(img, size, 10);
    const sum2 = sha256File(img);
    const reopened = await Repository.open(storage, PASS);
    const second = await backupPath(reopened, img, { disk: 'vm1' });
    assert.equal(second.manifest.parentPointId, first.manifest.pointId);
    assert.ok(second.newChunks <= 10, `new chunks ${second.newChunks}`);
    assert.ok(second.bytesStored < 200 * 1024, `stored ${second.bytesStored}`);

    for (const [m, sum] of [[first.manifest, sum1], [second.manifest, sum2]] as const) {
      const out = join(tmp.path, `r-${m.pointId}.img`);
      const reader = await PointReader.open(reopened, m);
      await writeDisk(reader, out);
      await reader.close();
      assert.equal(sha256File(out), sum);
    }
  } finally {
    tmp.cleanup();
  }
});
