import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isLifeboatError, type ErrorCode } from '../../src/core/errors.js';
import { listAll, type Storage } from '../../src/storage/storage.js';

/**
 * The one behavioural suite every storage driver must pass: each clause of the
 * contract in src/storage/storage.ts has a test here. `factory` must return a
 * store with an empty namespace each time it is called.
 */
export interface ContractExpectations {
  /**
   * What the driver must declare in capabilities.conditionalCreate. The race between
   * concurrent create-only puts is asserted only for drivers that declare it; for the
   * others the declaration itself is asserted (capabilities are data, not probes).
   */
  readonly conditionalCreate: boolean;
  /**
   * Set only for a test double that is known to break put() atomicity although the
   * real service keeps it (s3rver writes objects in place; AWS S3 does not). The
   * concurrent-puts clause then checks only that the key survives, and its title says
   * why. Default true; never set it for a driver's own shortcoming.
   */
  readonly atomicPutService?: boolean;
}

/** Deterministic test bytes: different seeds give different contents. */
export function testBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isLifeboatError(err), `expected LifeboatError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    return true;
  });
}

const MIB = 1024 * 1024;

export function storageContract(name: string, factory: () => Promise<Storage>, expect: ContractExpectations): void {
  /** Runs `body` against a fresh store and closes it afterwards. */
  const withStore = (body: (s: Storage) => Promise<void>) => async () => {
    const storage = await factory();
    try {
      await body(storage);
    } finally {
      await storage.close();
    }
  };

  describe(`storage contract: ${name}`, () => {
    it('declares its capabilities and a URL without credentials', withStore(async (s) => {
      assert.equal(s.capabilities.conditionalCreate, expect.conditionalCreate);
      assert.ok(Number.isSafeInteger(s.capabilities.maxObjectSizeBytes) && s.capabilities.maxObjectSizeBytes >= 64 * MIB);
      const url = new URL(s.url);
      assert.equal(url.username, '');
      assert.equal(url.password, '');
      assert.equal(url.search, '');
    }));

    it('round-trips an empty object, one byte and several MiB', withStore(async (s) => {
      const cases: [string, Buffer][] = [
        ['rt/empty', Buffer.alloc(0)],
        ['rt/one', Buffer.from([0xa5])],
        ['rt/big', testBytes(5 * MIB + 3, 1)],
      ];
      for (const [key, data] of cases) await s.put(key, data);
      for (const [key, data] of cases) {
        const back = await s.get(key);
        assert.ok(Buffer.isBuffer(back));
        assert.equal(back.length, data.length, key);
        assert.ok(back.equals(data), key);
      }
    }));

    it('overwrites: a put replaces the object and repeating it is harmless', withStore(async (s) => {
      await s.put('ow/k', testBytes(1000, 2));
      await s.put('ow/k', testBytes(10, 3));
      assert.ok((await s.get('ow/k')).equals(testBytes(10, 3)));
      await s.put('ow/k', testBytes(10, 3));
      assert.ok((await s.get('ow/k')).equals(testBytes(10, 3)));
      assert.equal((await s.stat('ow/k'))?.sizeBytes, 10);
      assert.deepEqual((await listAll(s, 'ow/')).map((i) => i.key), ['ow/k']);
    }));

    it('range reads return the bytes that exist', withStore(async (s) => {
      const data = testBytes(100, 4);
      await s.put('rg/k', data);
      await s.put('rg/empty', Buffer.alloc(0));
      const read = (offset: number, length: number) => s.get('rg/k', { offset, length });
      assert.ok((await read(10, 20)).equals(data.subarray(10, 30)), 'inside');
      assert.ok((await read(0, 100)).equals(data), 'exactly the object');
      assert.ok((await read(90, 20)).equals(data.subarray(90)), 'crossing the end');
      assert.ok((await read(99, 1)).equals(data.subarray(99)), 'last byte');
      assert.equal((await read(100, 5)).length, 0, 'at the end');
      assert.equal((await read(1000, 5)).length, 0, 'past the end');
      assert.equal((await read(5, 0)).length, 0, 'zero length');
      assert.equal((await s.get('rg/empty', { offset: 0, length: 10 })).length, 0, 'empty object');
    }));

    it('reads of an absent key throw NOT_FOUND', withStore(async (s) => {
      await s.put('nf/present', Buffer.from('x'));
      await expectCode(s.get('nf/absent'), 'NOT_FOUND');
      await expectCode(s.get('nf/absent', { offset: 0, length: 10 }), 'NOT_FOUND');
      await expectCode(s.get('nf/absent', { offset: 0, length: 0 }), 'NOT_FOUND');
      await expectCode(s.get('nf'), 'NOT_FOUND'); // a prefix of a key is not a key
      await expectCode(s.get('nf/present/deeper'), 'NOT_FOUND');
    }));

    it('stat reports size and time, and undefined for an absent key', withStore(async (s) => {
      const before = Date.now();
      await s.put('st/k', testBytes(1234, 5));
      const info = await s.stat('st/k');
      assert.ok(info);
      assert.equal(info.key, 'st/k');
      assert.equal(info.sizeBytes, 1234);
      assert.ok(info.modifiedAt instanceof Date && !Number.isNaN(info.modifiedAt.getTime()));
      // Services stamp with their own clock (second resolution): allow skew, reject nonsense.
      assert.ok(Math.abs(info.modifiedAt.getTime() - before) < 10 * 60_000);
      assert.equal(await s.stat('st/absent'), undefined);
      assert.equal(await s.stat('st'), undefined);
    }));

    it('lists in ascending key order, by prefix, nested, each key once', withStore(async (s) => {
      // '-' < '.' < '/' < '0' < 'A' < '_' < 'a': a naive per-folder walk gets this wrong.
      const keys = ['d/x', 'd-x', 'd.x', 'd0', 'dA', 'd_x', 'da', 'd/sub/y', 'd/sub/z/deep', 'd/s', 'e', 'c/1'];
      for (const [i, key] of keys.entries()) await s.put(key, testBytes(i + 1, i));
      const sorted = [...keys].sort();
      const all = await listAll(s, '');
      assert.deepEqual(all.map((i) => i.key), sorted);
      for (const info of all) assert.equal(info.sizeBytes, keys.indexOf(info.key) + 1, info.key);
      const under = async (prefix: string) => (await listAll(s, prefix)).map((i) => i.key);
      assert.deepEqual(await under('d'), sorted.filter((k) => k.startsWith('d')));
      assert.deepEqual(await under('d/'), ['d/s', 'd/sub/y', 'd/sub/z/deep', 'd/x']);
      assert.deepEqual(await under('d/s'), ['d/s', 'd/sub/y', 'd/sub/z/deep']);
      assert.deepEqual(await under('d/sub/'), ['d/sub/y', 'd/sub/z/deep']);
      assert.deepEqual(await under('d/sub/z/deep'), ['d/sub/z/deep']);
      assert.deepEqual(await under('x'), []);
      assert.deepEqual(await under('d/nothing/'), []);
      assert.deepEqual(await under('../'), []);
    }));

    it('delete removes the object, is idempotent and spares neighbours', withStore(async (s) => {
      await s.put('dl/a/b', Buffer.from('1'));
      await s.put('dl/a/bc', Buffer.from('2'));
      await s.delete('dl/a/b');
      assert.equal(await s.stat('dl/a/b'), undefined);
      await expectCode(s.get('dl/a/b'), 'NOT_FOUND');
      await s.delete('dl/a/b');
      await s.delete('dl/never/was');
      assert.deepEqual((await listAll(s, 'dl/')).map((i) => i.key), ['dl/a/bc']);
      await s.delete('dl/a/bc');
      assert.deepEqual(await listAll(s, ''), []);
      await s.put('dl/a/b', Buffer.from('3')); // the namespace is usable again after deletes
      assert.equal((await s.get('dl/a/b')).toString(), '3');
    }));

    it('put with ifNoneMatch creates once and then refuses without changing anything', withStore(async (s) => {
      await s.put('inm/k', Buffer.from('first'), { ifNoneMatch: true });
      assert.equal((await s.get('inm/k')).toString(), 'first');
      await expectCode(s.put('inm/k', Buffer.from('second'), { ifNoneMatch: true }), 'STORAGE_PRECONDITION');
      assert.equal((await s.get('inm/k')).toString(), 'first');
      await s.put('inm/k', Buffer.from('third')); // an unconditional put still overwrites
      assert.equal((await s.get('inm/k')).toString(), 'third');
      await s.delete('inm/k');
      await s.put('inm/k', Buffer.from('fourth'), { ifNoneMatch: true });
      assert.equal((await s.get('inm/k')).toString(), 'fourth');
    }));

    it(`concurrent create-only puts: ${expect.conditionalCreate ? 'exactly one wins' : 'declared unenforced'}`, withStore(async (s) => {
      assert.equal(s.capabilities.conditionalCreate, expect.conditionalCreate);
      if (!s.capabilities.conditionalCreate) return; // the service cannot enforce it, and says so
      const values = Array.from({ length: 8 }, (_, i) => testBytes(64 * 1024, 100 + i));
      const results = await Promise.allSettled(values.map((v) => s.put('race/lock', v, { ifNoneMatch: true })));
      const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
      assert.equal(winners.length, 1, 'exactly one create-only put succeeds');
      for (const r of results) {
        if (r.status === 'rejected') assert.ok(isLifeboatError(r.reason, 'STORAGE_PRECONDITION'), String(r.reason));
      }
      const winner = winners[0] ?? -1;
      assert.ok((await s.get('race/lock')).equals(values[winner] ?? Buffer.alloc(0)));
    }));

    it('refuses invalid keys with USAGE and stores nothing', withStore(async (s) => {
      const bad = ['', '/a', 'a/', 'a//b', '.', '..', 'a/./b', 'a/../b', '../x', 'a b', 'a\\b', 'ä', 'a/b~'];
      for (const key of bad) {
        await expectCode(s.put(key, Buffer.from('x')), 'USAGE');
        await expectCode(s.put(key, Buffer.from('x'), { ifNoneMatch: true }), 'USAGE');
        await expectCode(s.get(key), 'USAGE');
        await expectCode(s.stat(key), 'USAGE');
        await expectCode(s.delete(key), 'USAGE');
      }
      assert.deepEqual(await listAll(s, ''), []);
    }));

    const atomic = expect.atomicPutService ?? true;
    it(`concurrent puts of one key ${atomic ? 'leave one whole value; readers never see a mix' : 'leave the key present (test double not atomic)'}`, withStore(async (s) => {
      const values = Array.from({ length: 6 }, (_, i) => testBytes(MIB + i, 200 + i));
      const isWhole = (b: Buffer) => values.some((v) => v.equals(b));
      await s.put('cc/k', values[0] ?? Buffer.alloc(0));
      let writing = true;
      const reader = (async () => {
        let reads = 0;
        while (atomic && (writing || reads < 2)) {
          assert.ok(isWhole(await s.get('cc/k')), 'a reader saw a partial or mixed object');
          reads++;
        }
      })();
      try {
        await Promise.all(values.map((v) => s.put('cc/k', v)));
      } finally {
        writing = false;
      }
      await reader;
      if (atomic) assert.ok(isWhole(await s.get('cc/k')));
      else assert.ok(await s.stat('cc/k'));
      assert.deepEqual((await listAll(s, 'cc/')).map((i) => i.key), ['cc/k']);
    }));
  });
}
