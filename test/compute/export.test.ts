/**
 * The export compute driver: the contract suite, and the files it writes are
 * the recovery point's disks in the chosen format (read back with qemu-img).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createComputeDriver } from '../../src/compute/index.js';
import { ExportComputeDriver } from '../../src/compute/export.js';
import { isLifeboatError } from '../../src/core/errors.js';
import { bufferSource } from '../helpers/compute.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { run } from '../helpers/guest.js';
import { computeContractSuite } from './contract.js';

/** 4 MiB: random data in the first and last MiB, zeros between (a hole for sparse formats). */
function diskImage(): Buffer {
  const data = Buffer.alloc(4 * 1024 * 1024);
  randomBytes(1024 * 1024).copy(data, 0);
  randomBytes(1024 * 1024).copy(data, 3 * 1024 * 1024);
  return data;
}

computeContractSuite('export', async () => {
  requireTool('qemu-nbd', 'qemu-utils');
  const tmp = makeTempDir('compute-export-contract');
  const stateDir = join(tmp.path, 'state');
  return {
    driver: await createComputeDriver('export', { stateDir }),
    disks: [
      { name: 'root', source: bufferSource(diskImage()) },
      { name: 'data', source: bufferSource(diskImage()) },
    ],
    leftovers: async (id) => (existsSync(join(stateDir, id)) ? [join(stateDir, id)] : []),
    cleanup: async () => tmp.cleanup(),
  };
});

describe('export driver', () => {
  const tmp = makeTempDir('compute-export');
  after(() => tmp.cleanup());

  for (const format of ['raw', 'qcow2', 'vhd'] as const) {
    test(`writes each disk as a ${format} image that converts back to the same bytes`, async () => {
      const qemuImg = requireTool('qemu-img', 'qemu-utils');
      const stateDir = join(tmp.path, format);
      const driver = new ExportComputeDriver({ stateDir, format });
      const root = diskImage();
      const data = diskImage();
      const status = await driver.create({
        id: 'exported',
        name: 'web01',
        disks: [
          { name: 'root', source: bufferSource(root) },
          { name: 'data', source: bufferSource(data) },
        ],
        network: { kind: 'isolated' },
      });
      assert.equal(status.independent, true);
      assert.equal(status.copyPercent, 100);
      assert.equal(status.accel, null);
      assert.equal(status.files.length, 2);
      for (const [file, expected] of [
        [status.files[0] as string, root],
        [status.files[1] as string, data],
      ] as const) {
        const info = JSON.parse((await run(qemuImg, ['info', '--output=json', file])).stdout) as { format: string };
        assert.equal(info.format, format === 'vhd' ? 'vpc' : format);
        const back = join(tmp.path, `${format}-back.raw`);
        // A VHD is sized by its footer's current size, as Hyper-V and Azure do (qemu defaults to the CHS geometry for other writers).
        const input = format === 'vhd' ? ['--image-opts', `driver=vpc,force_size_calc=current_size,file.driver=file,file.filename=${file}`] : [file];
        await run(qemuImg, ['convert', '-O', 'raw', ...input, back]);
        const bytes = await readFile(back);
        assert.equal(createHash('sha256').update(bytes.subarray(0, expected.length)).digest('hex'), createHash('sha256').update(expected).digest('hex'));
      }
      await assert.rejects(driver.start('exported'), (err: unknown) => {
        assert.ok(isLifeboatError(err, 'UNSUPPORTED'));
        assert.match(err.message, /import/);
        assert.ok(err.message.includes(status.files[0] as string), 'the message names the files');
        return true;
      });
      await driver.destroy('exported');
      for (const file of status.files) assert.equal(existsSync(file), false);
    });
  }

  test('a create that fails half-way leaves nothing behind', async () => {
    const stateDir = join(tmp.path, 'failing');
    const driver = new ExportComputeDriver({ stateDir, format: 'raw' });
    const broken = { ...bufferSource(diskImage()), read: async () => Promise.reject(new Error('the store went away')) };
    await assert.rejects(
      driver.create({
        id: 'half',
        name: 'half',
        disks: [
          { name: 'root', source: bufferSource(diskImage()) },
          { name: 'data', source: broken },
        ],
        network: { kind: 'none' },
      }),
      /the store went away/,
    );
    assert.deepEqual(await driver.list(), []);
    assert.equal(existsSync(join(stateDir, 'half')), false);
  });

  test('auto picks qemu when QEMU is installed', async () => {
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    requireTool('qemu-img', 'qemu-utils');
    const driver = await createComputeDriver('auto', { stateDir: join(tmp.path, 'auto') });
    assert.equal(driver.name, 'qemu');
    // Creating it boots nothing and makes no machine: at most its state directory exists (a long one
    // is then reached through a short link for QEMU's sockets), empty.
    assert.deepEqual(await driver.list(), []);
    if (existsSync(join(tmp.path, 'auto'))) assert.deepEqual(readdirSync(join(tmp.path, 'auto')), [], 'creating a driver makes no machine');
  });

  test('auto falls back to export without QEMU on PATH', async () => {
    const saved = process.env['PATH'];
    process.env['PATH'] = '/nonexistent';
    try {
      const driver = await createComputeDriver('auto', { stateDir: join(tmp.path, 'auto2') });
      assert.equal(driver.name, 'export');
    } finally {
      process.env['PATH'] = saved;
    }
  });
});
