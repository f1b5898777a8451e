import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BlockSource } from '../../src/core/block-source.js';
import { LifeboatError, isLifeboatError } from '../../src/core/errors.js';
import { IMAGE_FORMATS, exportImage, type ImageFormat } from '../../src/export/index.js';
import { COPY_CHUNK_BYTES } from '../../src/export/image-io.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { KnownMapSource, MiB, makeSparseImage, type DataRange } from './fixtures.js';

const SIZE = 40 * MiB + 512;
const RANGES = [
  { offset: 1000, length: 9 * MiB }, // bigger than one copy chunk
  { offset: 20 * MiB, length: 512 },
  { offset: SIZE - 512, length: 512 },
];

/** Delegates to `inner` and fails the `failAt`-th read the way a vanished disk would. */
function failingSource(inner: BlockSource, failAt: number): BlockSource {
  let reads = 0;
  return {
    sizeBytes: inner.sizeBytes,
    read: (offset, length) => {
      if (++reads === failAt) return Promise.reject(new LifeboatError('SOURCE_UNREADABLE', 'disk vanished'));
      return inner.read(offset, length);
    },
    extents: (offset, length) => inner.extents(offset, length),
    close: () => inner.close(),
  };
}

describe('exportImage', () => {
  const tmp = makeTempDir('export-image');
  const src = join(tmp.path, 'src.img');
  let data: DataRange[];
  before(() => {
    requireTool('qemu-img', 'qemu-utils');
    data = makeSparseImage(src, SIZE, RANGES);
  });
  after(() => tmp.cleanup());

  test('every format: progress is monotonic and ends at the size; reads are bounded and skip zero extents', async () => {
    const dataBytes = data.reduce((n, r) => n + r.length, 0);
    for (const format of IMAGE_FORMATS) {
      const source = await KnownMapSource.open(src, data);
      const seen: [number, number][] = [];
      await exportImage(source, { format, path: join(tmp.path, `progress.${format}`), onProgress: (d, t) => seen.push([d, t]) });
      await source.close();
      assert.ok(seen.length > 1, format);
      assert.ok(seen.every(([, t]) => t === SIZE), format);
      assert.ok(seen.every(([d], i) => i === 0 || d > (seen[i - 1]?.[0] ?? 0)), `${format}: progress must increase`);
      assert.equal(seen.at(-1)?.[0], SIZE, format);
      assert.ok(Math.max(...source.reads.map((r) => r.length)) <= COPY_CHUNK_BYTES, `${format}: a read larger than one chunk`);
      assert.equal(source.reads.reduce((n, r) => n + r.length, 0), dataBytes, `${format}: zero extents must not be read`);
    }
  });

  test('an unknown format is a USAGE error and creates nothing', async () => {
    const source = await KnownMapSource.open(src, data);
    const path = join(tmp.path, 'nothing.vmdk');
    await assert.rejects(exportImage(source, { format: 'vmdk' as ImageFormat, path }), (err: unknown) => isLifeboatError(err, 'USAGE'));
    await source.close();
    assert.ok(!readdirSync(tmp.path).some((f) => f.includes('nothing')));
  });

  test('a target in a missing directory, or that is a directory, is TARGET_UNWRITABLE', async () => {
    const source = await KnownMapSource.open(src, data);
    const dir = join(tmp.path, 'a-directory');
    mkdirSync(dir);
    for (const path of [join(tmp.path, 'no-such-dir', 'x.raw'), dir]) {
      await assert.rejects(exportImage(source, { format: 'raw', path }), (err: unknown) => isLifeboatError(err, 'TARGET_UNWRITABLE'));
    }
    await source.close();
  });

  test('a failure half-way leaves the old target untouched and no temp file behind', async () => {
    const dir = join(tmp.path, 'atomic');
    mkdirSync(dir);
    for (const format of IMAGE_FORMATS) {
      const path = join(dir, `disk.${format}`);
      writeFileSync(path, 'previous image');
      const inner = await KnownMapSource.open(src, data);
      await assert.rejects(exportImage(failingSource(inner, 2), { format, path }), (err: unknown) => isLifeboatError(err, 'SOURCE_UNREADABLE'));
      await inner.close();
      assert.equal(readFileSync(path, 'utf8'), 'previous image', format);
    }
    assert.deepEqual(readdirSync(dir).sort(), IMAGE_FORMATS.map((f) => `disk.${f}`).sort());

    // A successful export replaces the old file.
    const source = await KnownMapSource.open(src, data);
    await exportImage(source, { format: 'raw', path: join(dir, 'disk.raw') });
    await source.close();
    assert.deepEqual(readFileSync(join(dir, 'disk.raw')), readFileSync(src));
    assert.deepEqual(readdirSync(dir).sort(), IMAGE_FORMATS.map((f) => `disk.${f}`).sort());
  });
});
