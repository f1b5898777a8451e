/**
 * Data on disk is forever: a store written by format version 1 (committed under
 * test/fixtures/store-v1, never regenerated) must keep opening, verifying and
 * restoring to the same bytes in every later release.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStorage } from '../../src/storage/registry.js';
import { PointReader } from '../../src/store/point-reader.js';
import { Repository } from '../../src/store/repository.js';
import { verifyStore } from '../../src/store/verify.js';
import { makeTempDir, repoRoot } from '../helpers/env.js';

test('a format v1 store still verifies and restores bit for bit', async () => {
  const fixture = JSON.parse(readFileSync(join(repoRoot, 'test', 'fixtures', 'store-v1.json'), 'utf8')) as {
    passphrase: string;
    points: Record<string, string>;
  };
  const tmp = makeTempDir('fixture');
  try {
    cpSync(join(repoRoot, 'test', 'fixtures', 'store-v1'), join(tmp.path, 'store'), { recursive: true });
    const storage = await openStorage(`file://${join(tmp.path, 'store')}`);
    const repo = await Repository.open(storage, fixture.passphrase);
    const report = await verifyStore(repo, { full: true });
    assert.deepEqual(report.problems, []);
    const points = await repo.listPoints();
    assert.deepEqual(points.map((p) => p.pointId).sort(), Object.keys(fixture.points).sort());
    assert.deepEqual(points.map((p) => p.origin), ['backup', 'journal']);
    for (const m of points) {
      const reader = await PointReader.open(repo, m, { workers: 0 });
      const sum = createHash('sha256').update(await reader.read(0, reader.sizeBytes)).digest('hex');
      await reader.close();
      assert.equal(sum, fixture.points[m.pointId], `point ${m.pointId}`);
    }
    await storage.close();
  } finally {
    tmp.cleanup();
  }
});
