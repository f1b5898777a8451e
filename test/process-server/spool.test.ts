import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { segmentFileName, Spool } from '../../src/process-server/spool.js';
import { rejectsCode } from '../format/fuzz.js';
import { DISK, tempDir } from './harness.js';

test('the spool recovers what a killed process left: temp files and unacknowledged segments go, the rest is queued', async () => {
  const dir = await tempDir('spool');
  try {
    const { spool } = await Spool.open(dir, 1 << 20);
    await spool.bindVault(DISK, 'v1');
    for (let s = 1; s <= 3; s++) await spool.put(DISK, 4, s, [Buffer.from(`frame ${s}`)], 1000 + s);
    assert.equal(spool.ackedSequence(DISK, 4), 3);
    assert.equal(spool.usedBytes, 3 * 7);
    const gen = join(dir, DISK, '4');
    assert.equal((await readFile(join(gen, 'acked'), 'utf8')).trim(), '3');
    // A crash: a half-written segment, a segment renamed but never acknowledged, a stray temp `acked`.
    await writeFile(join(gen, `${segmentFileName(4)}.tmp`), 'half');
    await writeFile(join(gen, segmentFileName(5)), 'never acked');
    await writeFile(join(gen, 'acked.tmp'), '5\n');
    await mkdir(join(dir, 'lost+found'));

    const { spool: again, recovery } = await Spool.open(dir, 1 << 20);
    assert.deepEqual(
      recovery.entries.map((e) => e.sequence).sort(),
      [1, 2, 3],
    );
    assert.equal(recovery.removedTempFiles, 2);
    assert.equal(recovery.removedUnacked, 1);
    assert.deepEqual(recovery.unknown, [join(dir, 'lost+found')]);
    assert.deepEqual((await readdir(gen)).sort(), [segmentFileName(1), segmentFileName(2), segmentFileName(3), 'acked']);
    assert.equal(again.ackedSequence(DISK, 4), 3);
    assert.equal(again.vaultOf(DISK), 'v1');
    assert.equal(again.usedBytes, 3 * 7);
    for (const e of recovery.entries) await again.remove(e);
    assert.equal(again.usedBytes, 0);
    // `acked` outlives the uploaded files.
    const { spool: third, recovery: none } = await Spool.open(dir, 1 << 20);
    assert.equal(none.entries.length, 0);
    assert.equal(third.ackedSequence(DISK, 4), 3);
    assert.equal(third.ackedSequence(DISK, 5), undefined);

    await third.markFenced(DISK, 4);
    assert.ok((await Spool.open(dir, 1 << 20)).spool.isFenced(DISK, 4));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a segment that would pass the spool limit is SPOOL_FULL and writes nothing', async () => {
  const dir = await tempDir('spool');
  try {
    const { spool } = await Spool.open(dir, 100);
    await spool.put(DISK, 1, 1, [Buffer.alloc(60)], 0);
    const err = await rejectsCode(spool.put(DISK, 1, 2, [Buffer.alloc(60)], 0), 'SPOOL_FULL');
    assert.equal(err.retryable, true);
    assert.equal(spool.ackedSequence(DISK, 1), 1);
    assert.deepEqual((await readdir(join(dir, DISK, '1'))).sort(), [segmentFileName(1), 'acked']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
