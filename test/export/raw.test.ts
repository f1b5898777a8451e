import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isLifeboatError } from '../../src/core/errors.js';
import { exportImage } from '../../src/export/index.js';
import { writeRaw } from '../../src/export/raw.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { KnownMapSource, MiB, allocatedBytes, makeSparseImage, pattern, qemuImg, qemuInfo } from './fixtures.js';

const SIZE = 67 * MiB + 512;
const RANGES = [
  { offset: 0, length: 4096 },
  { offset: 5 * MiB + 123, length: 3 * MiB },
  { offset: 64 * MiB - 100, length: 2 * MiB },
  { offset: SIZE - 700, length: 700 },
];
const DATA_BYTES = RANGES.reduce((n, r) => n + r.length, 0);

function readRange(path: string, offset: number, length: number): Buffer {
  return readFileSync(path).subarray(offset, offset + length);
}

describe('raw export', () => {
  const tmp = makeTempDir('export-raw');
  const srcPath = join(tmp.path, 'src.img');
  let data: ReturnType<typeof makeSparseImage>;
  before(() => {
    requireTool('qemu-img', 'qemu-utils');
    data = makeSparseImage(srcPath, SIZE, RANGES);
  });
  after(() => tmp.cleanup());

  test('a sparse file export equals the disk, keeps its odd size and stays sparse', async () => {
    const out = join(tmp.path, 'out.raw');
    const source = await KnownMapSource.open(srcPath, data);
    const progress: number[] = [];
    await exportImage(source, { format: 'raw', path: out, onProgress: (done, total) => (assert.equal(total, SIZE), progress.push(done)) });
    await source.close();

    const info = qemuInfo(out, 'raw');
    assert.equal(info.format, 'raw');
    assert.equal(info['virtual-size'], SIZE);
    assert.equal(statSync(out).size, SIZE);
    assert.match(qemuImg(['compare', '-f', 'raw', srcPath, '-F', 'raw', out]), /Images are identical/);
    assert.ok(allocatedBytes(out) < DATA_BYTES + MiB, `allocated ${allocatedBytes(out)} bytes for ${DATA_BYTES} bytes of data`);
    // Zero extents are never read, only data.
    assert.equal(source.reads.reduce((n, r) => n + r.length, 0), DATA_BYTES);
    assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
    assert.equal(progress.at(-1), SIZE);
  });

  test('a device target gets zeros written over old contents, except when declared pre-zeroed', async () => {
    const hole = { offset: 20 * MiB, length: 4096 }; // inside a zero extent
    for (const preZeroed of [false, true]) {
      const dev = join(tmp.path, `dev-${String(preZeroed)}.img`);
      writeFileSync(dev, Buffer.alloc(SIZE + MiB, 0xaa)); // a "device" full of old data, bigger than the disk
      const source = await KnownMapSource.open(srcPath, data);
      const handle = await open(dev, 'r+');
      await writeRaw(source, handle, { target: 'device', preZeroed });
      await handle.close();
      await source.close();

      assert.equal(statSync(dev).size, SIZE + MiB, 'a device is never truncated');
      const r = data[1];
      assert.ok(r !== undefined);
      assert.deepEqual(readRange(dev, r.offset, r.length), pattern(r.offset, r.length));
      const expectedHole = Buffer.alloc(hole.length, preZeroed ? 0xaa : 0);
      assert.deepEqual(readRange(dev, hole.offset, hole.length), expectedHole);
      assert.deepEqual(readRange(dev, SIZE, 16), Buffer.alloc(16, 0xaa), 'bytes past the disk are left alone');
    }
  });

  test('exportImage writes a real block device in place and refuses one that is too small', async () => {
    const losetup = requireTool('losetup', 'mount');
    const backing = join(tmp.path, 'loop-backing.img');
    writeFileSync(backing, Buffer.alloc(SIZE + 512, 0xaa));
    let device: string;
    try {
      device = execFileSync(losetup, ['--find', '--show', backing], { encoding: 'utf8' }).trim();
    } catch (err) {
      throw new Error(`this test attaches a loop device and needs root with /dev/loop-control: ${String(err)}`);
    }
    try {
      const source = await KnownMapSource.open(srcPath, data);
      await assert.rejects(exportImage(source, { format: 'qcow2', path: device }), (err: unknown) => isLifeboatError(err, 'USAGE'));
      await exportImage(source, { format: 'raw', path: device });
      await source.close();
      // The device started full of 0xaa: "identical" proves the zero extents were written as zeros.
      const compare = ['compare', '--image-opts', `driver=raw,file.filename=${srcPath}`, `driver=raw,size=${SIZE},file.filename=${device}`];
      assert.match(qemuImg(compare), /Images are identical/);

      const small = join(tmp.path, 'small.img');
      writeFileSync(small, Buffer.alloc(MiB));
      const smallDevice = execFileSync(losetup, ['--find', '--show', small], { encoding: 'utf8' }).trim();
      try {
        const again = await KnownMapSource.open(srcPath, data);
        await assert.rejects(exportImage(again, { format: 'raw', path: smallDevice }), (err: unknown) => isLifeboatError(err, 'SIZE_MISMATCH'));
        await again.close();
      } finally {
        execFileSync(losetup, ['--detach', smallDevice]);
      }
    } finally {
      execFileSync(losetup, ['--detach', device]);
    }
  });
});
