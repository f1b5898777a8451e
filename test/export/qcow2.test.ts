import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { exportImage } from '../../src/export/index.js';
import { QCOW2_CLUSTER_BYTES, QCOW2_REFCOUNTS_PER_BLOCK, planQcow2 } from '../../src/export/qcow2-layout.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { KnownMapSource, MiB, allocatedBytes, makeSparseImage, qemuImg, qemuImgStatus, qemuInfo, type DataRange } from './fixtures.js';

interface CheckReport {
  readonly 'check-errors': number;
  readonly corruptions?: number;
  readonly leaks?: number;
  readonly 'allocated-clusters'?: number;
}

/** qemu-img check must find no corruption and no leak (exit status 0). */
function assertCleanCheck(path: string): CheckReport {
  const r = qemuImgStatus(['check', '--output=json', '-f', 'qcow2', path]);
  assert.equal(r.status, 0, `qemu-img check failed: ${r.stdout}${r.stderr}`);
  const report = JSON.parse(r.stdout) as CheckReport;
  assert.equal(report['check-errors'], 0);
  assert.equal(report.corruptions ?? 0, 0);
  assert.equal(report.leaks ?? 0, 0);
  return report;
}

function clustersTouched(data: readonly DataRange[]): number {
  const set = new Set<number>();
  for (const r of data) {
    for (let c = Math.floor(r.offset / QCOW2_CLUSTER_BYTES); c * QCOW2_CLUSTER_BYTES < r.offset + r.length; c++) set.add(c);
  }
  return set.size;
}

describe('qcow2 export', () => {
  const tmp = makeTempDir('export-qcow2');
  before(() => requireTool('qemu-img', 'qemu-utils'));
  after(() => tmp.cleanup());

  /** Generates the source, exports it, and checks info, check and compare. */
  async function roundTrip(name: string, size: number, ranges: readonly DataRange[]): Promise<{ out: string; data: DataRange[] }> {
    const src = join(tmp.path, `${name}.img`);
    const out = join(tmp.path, `${name}.qcow2`);
    const data = makeSparseImage(src, size, ranges);
    const source = await KnownMapSource.open(src, data);
    await exportImage(source, { format: 'qcow2', path: out });
    await source.close();

    const info = qemuInfo(out, 'qcow2');
    assert.equal(info.format, 'qcow2');
    assert.equal(info['virtual-size'], Math.ceil(size / 512) * 512);
    const report = assertCleanCheck(out);
    assert.equal(report['allocated-clusters'] ?? 0, clustersTouched(data), 'zero clusters must stay unallocated');
    assert.match(qemuImg(['compare', '-f', 'raw', src, '-F', 'qcow2', out]), /Images are identical/);
    return { out, data };
  }

  test('an odd-sized, mostly empty disk: identical, clean check, small file', async () => {
    const size = 67 * MiB + 512;
    const ranges = [
      { offset: 0, length: 4096 },
      { offset: 5 * MiB + 123, length: 3 * MiB },
      { offset: 64 * MiB - 100, length: 2 * MiB },
      { offset: size - 700, length: 700 },
    ];
    const { out } = await roundTrip('odd', size, ranges);
    assert.ok(allocatedBytes(out) < 6 * MiB, `allocated ${allocatedBytes(out)} bytes`);
  });

  test('a size that is not a whole sector is rounded up, keeping the last bytes', async () => {
    await roundTrip('unaligned', 3 * MiB + 100, [{ offset: 3 * MiB, length: 100 }]);
  });

  test('empty and all-zero disks', async () => {
    await roundTrip('zero-size', 0, []);
    await roundTrip('all-zero', 5 * MiB, []);
  });

  test('data in several L2 tables, one run crossing the 512 MiB L2 boundary', async () => {
    const size = 1536 * MiB + 512;
    await roundTrip('multi-l2', size, [
      { offset: 100, length: 1000 },
      { offset: 512 * MiB - 70_000, length: 200_000 },
      { offset: 1100 * MiB, length: 64 * 1024 },
      { offset: size - 512, length: 512 },
    ]);
  });

  test('more clusters than one refcount block covers (32768): the refcount table grows', async () => {
    // 512 bytes in every cluster of 2 GiB + 64 MiB: 33792 data clusters, each mostly a hole.
    const clusters = 33_792;
    const ranges: DataRange[] = [];
    for (let c = 0; c < clusters; c++) ranges.push({ offset: c * QCOW2_CLUSTER_BYTES + 4096, length: 512 });
    const { out } = await roundTrip('refcount-blocks', clusters * QCOW2_CLUSTER_BYTES, ranges);
    const layout = planQcow2(clusters * QCOW2_CLUSTER_BYTES, clusters, 5);
    assert.equal(layout.refcountBlocks, 2);
    assert.ok(allocatedBytes(out) < 400 * MiB);
  });

  test('layout: refcount blocks cover every cluster of the file, themselves included', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 0, max: 5_000_000 }), (size, wanted) => {
        const maxData = Math.ceil(size / QCOW2_CLUSTER_BYTES);
        const data = Math.min(wanted, maxData);
        const l2 = Math.min(Math.ceil(data / 8192) + 1, Math.ceil(maxData / 8192));
        const l = planQcow2(size, data, l2);
        assert.ok(l.refcountBlocks * QCOW2_REFCOUNTS_PER_BLOCK >= l.totalClusters);
        assert.ok(l.refcountTableClusters * (QCOW2_CLUSTER_BYTES / 8) >= l.refcountBlocks);
        assert.equal(l.dataOffset / QCOW2_CLUSTER_BYTES + data, l.totalClusters);
      }),
    );
  });

  test('property: random extent layouts round-trip with a clean check', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 24 * MiB }),
        fc.array(
          fc.record({ offset: fc.nat(24 * MiB), length: fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: 3 * MiB })) }),
          { maxLength: 10 },
        ),
        async (size, ranges) => {
          await roundTrip(`prop-${n++}`, size, ranges);
        },
      ),
      { numRuns: 25 },
    );
  });
});
