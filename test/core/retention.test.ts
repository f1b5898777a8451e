import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { pointsToKeep, THINNING, type RetainedPoint } from '../../src/core/retention.js';

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const MIN = 60_000;

test('thinning: every point of the last minutes, one a minute for an hour, one per five minutes after, none past retention', () => {
  // A point every 5 s for 3 hours.
  const points: RetainedPoint[] = [];
  for (let at = NOW - 3 * 3_600_000; at <= NOW; at += 5000) points.push({ id: `p${at}`, capturedAtMs: at, appConsistent: false });
  const keep = pointsToKeep(points, NOW, 2);
  const kept = points.filter((p) => keep.has(p.id));
  const ages = kept.map((p) => NOW - p.capturedAtMs);
  assert.equal(ages.filter((a) => a <= THINNING.allWithinMs).length, 25, 'all of the last 2 minutes (every 5 s)');
  const hour = ages.filter((a) => a > THINNING.allWithinMs && a <= THINNING.perMinuteWithinMs).length;
  assert.ok(hour >= 57 && hour <= 59, `about one a minute for the rest of the hour: ${hour}`);
  const older = ages.filter((a) => a > THINNING.perMinuteWithinMs).length;
  assert.ok(older >= 11 && older <= 13, `one per five minutes for the second hour: ${older}`);
  assert.ok(Math.max(...ages) <= 2 * 3_600_000, 'nothing older than the retention');
  assert.ok(keep.has(`p${NOW}`), 'the newest');
});

test('thinning: the newest and the newest app-consistent point stay whatever their age; app points within retention stay', () => {
  const old: RetainedPoint = { id: 'old-app', capturedAtMs: NOW - 10 * 3_600_000, appConsistent: true };
  const app: RetainedPoint = { id: 'app', capturedAtMs: NOW - 90 * MIN, appConsistent: true };
  const crash: RetainedPoint = { id: 'crash', capturedAtMs: NOW - 90 * MIN + 1000, appConsistent: false };
  const newest: RetainedPoint = { id: 'newest', capturedAtMs: NOW - 5 * 3_600_000, appConsistent: false };
  assert.deepEqual([...pointsToKeep([old, newest], NOW, 1)].sort(), ['newest', 'old-app']);
  const keep = pointsToKeep([app, crash, { id: 'last', capturedAtMs: NOW, appConsistent: false }], NOW, 2);
  assert.ok(keep.has('app') && keep.has('last'));
});

test('thinning is stable: what it keeps once, it keeps again later unless age takes it out', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 4 * 3_600_000 }), { minLength: 1, maxLength: 300 }), fc.integer({ min: 0, max: 3_600_000 }), (offsets, later) => {
      const points = [...new Set(offsets)].map((o) => ({ id: `p${o}`, capturedAtMs: NOW - o, appConsistent: o % 7 === 0 }));
      const first = pointsToKeep(points, NOW, 3);
      const survivors = points.filter((p) => first.has(p.id));
      const second = pointsToKeep(survivors, NOW + later, 3);
      // Thinning twice keeps a subset, and never deletes a point the first pass kept that is still young.
      for (const id of second) assert.ok(first.has(id));
      for (const p of survivors) if (NOW + later - p.capturedAtMs <= THINNING.allWithinMs) assert.ok(second.has(p.id));
    }),
    { numRuns: 200 },
  );
});
