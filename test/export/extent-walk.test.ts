import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { BlockSource, Extent } from '../../src/core/block-source.js';
import { isLifeboatError } from '../../src/core/errors.js';
import { allocatedRuns, walkExtents } from '../../src/export/extent-walk.js';
import { normalise, type DataRange } from './fixtures.js';

/** A source that only has a map; reading it is a test failure. */
function mapSource(sizeBytes: number, extents: (offset: number, length: number) => Extent[]): BlockSource {
  return {
    sizeBytes,
    read: () => Promise.reject(new Error('extent walking must not read data')),
    extents: (offset, length) => Promise.resolve(extents(offset, length)),
    close: () => Promise.resolve(),
  };
}

function fromRanges(sizeBytes: number, ranges: readonly DataRange[]): BlockSource {
  const data = normalise(ranges, sizeBytes);
  return mapSource(sizeBytes, (offset, length) => {
    const out: Extent[] = [];
    let at = offset;
    for (const r of data) {
      const s = Math.max(r.offset, at);
      const t = Math.min(r.offset + r.length, offset + length);
      if (t <= s) continue;
      if (s > at) out.push({ offset: at, length: s - at, zero: true });
      out.push({ offset: s, length: t - s, zero: false });
      at = t;
    }
    if (at < offset + length) out.push({ offset: at, length: offset + length - at, zero: true });
    return out;
  });
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('extent walking', () => {
  test('a source whose extents leave a gap fails with INTERNAL instead of exporting garbage', async () => {
    const gappy = mapSource(4096, () => [
      { offset: 0, length: 1024, zero: false },
      { offset: 2048, length: 2048, zero: true },
    ]);
    await assert.rejects(collect(walkExtents(gappy)), (err: unknown) => isLifeboatError(err, 'INTERNAL'));
    const short = mapSource(4096, () => [{ offset: 0, length: 1024, zero: false }]);
    await assert.rejects(collect(walkExtents(short)), (err: unknown) => isLifeboatError(err, 'INTERNAL'));
  });

  test('allocated runs cover exactly the units that hold non-zero bytes', async () => {
    const unit = 4096;
    const window = unit * 8;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 40 * unit }),
        fc.array(fc.record({ offset: fc.nat(40 * unit), length: fc.integer({ min: 1, max: 3 * unit }) }), { maxLength: 12 }),
        async (size, ranges) => {
          const data = normalise(ranges, size);
          const expected = new Set<number>();
          for (const r of data) {
            for (let u = Math.floor(r.offset / unit); u * unit < r.offset + r.length; u++) expected.add(u);
          }
          const runs = await collect(allocatedRuns(fromRanges(size, ranges), unit, window));
          const got: number[] = [];
          let dataBytes = 0;
          for (const run of runs) {
            for (let u = run.firstUnit; u < run.firstUnit + run.unitCount; u++) got.push(u);
            // Runs never straddle a window, so per-run extent lists stay bounded.
            assert.equal(Math.floor(run.firstUnit / 8), Math.floor((run.firstUnit + run.unitCount - 1) / 8));
            for (const e of run.data) {
              assert.equal(e.zero, false);
              assert.ok(e.offset >= run.firstUnit * unit && e.offset + e.length <= (run.firstUnit + run.unitCount) * unit);
              dataBytes += e.length;
            }
          }
          assert.deepEqual(got, [...expected].sort((a, b) => a - b));
          assert.equal(dataBytes, data.reduce((n, r) => n + r.length, 0));
        },
      ),
      { numRuns: 200 },
    );
  });
});
