import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { paginate } from '../../../src/vault/http/paging.js';

const ids = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `id${String(i).padStart(4, '0')}` }));

/** Follows nextCursor to the end, like a client. */
function walk(all: { id: string }[], limit: number, order?: 'oldest' | 'newest'): string[] {
  const seen: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = paginate(all, { limit, ...(after === undefined ? {} : { after }), ...(order ? { order } : {}) });
    seen.push(...page.items.map((x) => x.id));
    if (page.nextCursor === null) return seen;
    after = page.nextCursor;
  }
}

test('pages oldest first by default and newest first on request, each item once', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 1, max: 25 }), (n, limit) => {
      const all = ids(n);
      const shuffled = [...all].sort(() => Math.random() - 0.5);
      const ascending = all.map((x) => x.id);
      assert.deepEqual(walk(shuffled, limit), ascending);
      assert.deepEqual(walk(shuffled, limit, 'oldest'), ascending);
      assert.deepEqual(walk(shuffled, limit, 'newest'), [...ascending].reverse());
    }),
  );
});

test('newest first: the first page is the newest, and after= pages towards older ids', () => {
  const page = paginate(ids(10), { limit: 3, order: 'newest' });
  assert.deepEqual(page.items.map((x) => x.id), ['id0009', 'id0008', 'id0007']);
  assert.equal(page.nextCursor, 'id0007');
  assert.deepEqual(paginate(ids(10), { limit: 3, order: 'newest', after: 'id0002' }).items.map((x) => x.id), ['id0001', 'id0000']);
});
