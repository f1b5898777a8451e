import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { newTimeId, timeOfId, TimeIdSequence, TIME_ID_PATTERN } from '../../src/format/ids.js';

const MAX_MS = 2 ** 48 - 1; // ULID time field: 48 bits
const ms = fc.integer({ min: 0, max: MAX_MS });
const rand = fc.uint8Array({ minLength: 10, maxLength: 10 }).map((b) => () => Buffer.from(b));

test('a time id is 26 Crockford characters and encodes its millisecond', () => {
  fc.assert(
    fc.property(ms, rand, (t, random) => {
      const id = newTimeId(new Date(t), random);
      assert.match(id, TIME_ID_PATTERN);
      assert.equal(timeOfId(id)?.getTime(), t);
    }),
    { numRuns: 500 },
  );
});

test('time ids sort as strings in time order, whatever their random part', () => {
  fc.assert(
    fc.property(ms, ms, rand, rand, (a, b, ra, rb) => {
      fc.pre(a !== b);
      const ia = newTimeId(new Date(a), ra);
      const ib = newTimeId(new Date(b), rb);
      assert.equal(ia < ib, a < b, `${a} -> ${ia}, ${b} -> ${ib}`);
    }),
    { numRuns: 500 },
  );
});

test('ids of one millisecond differ by their random part only', () => {
  const t = new Date('2026-11-01T00:00:00Z');
  const a = newTimeId(t, () => Buffer.alloc(10, 0));
  const b = newTimeId(t, () => Buffer.alloc(10, 0xff));
  assert.equal(a.slice(0, 10), b.slice(0, 10));
  assert.equal(a.slice(10), '0'.repeat(16));
  assert.equal(b.slice(10), 'Z'.repeat(16));
  assert.notEqual(newTimeId(t), newTimeId(t));
});

test('timeOfId refuses anything that is not a time id', () => {
  for (const bad of ['', 'x', '01ARZ3NDEKTSV4RRFFQ69G5FA', '01ARZ3NDEKTSV4RRFFQ69G5FAVV', '01ARZ3NDEKTSV4RRFFQ69G5FAI', '01arz3ndektsv4rrffq69g5fav']) {
    assert.equal(timeOfId(bad), undefined, bad);
  }
  assert.throws(() => newTimeId(new Date(-1)), RangeError);
});

test('a TimeIdSequence strictly increases within a millisecond, after a step back, and after a given id', () => {
  const seq = new TimeIdSequence();
  const t = new Date('2026-11-01T00:00:00Z');
  const ids = Array.from({ length: 50 }, () => seq.next(t));
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
  const back = seq.next(new Date(t.getTime() - 60_000));
  assert.ok(back > (ids[ids.length - 1] as string), 'a clock that stepped back still gives a later id');
  const foreign = newTimeId(new Date(t.getTime() + 5_000));
  const after = new TimeIdSequence().next(t, undefined, foreign);
  assert.ok(after > foreign);
});
