import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LifeboatError } from '../../src/core/errors.js';
import { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { listAll, type Storage } from '../../src/storage/storage.js';
import { FaultStorage, seededRandom } from '../../src/storage/wrappers/faults.js';
import { LimitStorage } from '../../src/storage/wrappers/limit.js';
import { MetricsStorage } from '../../src/storage/wrappers/metrics.js';
import { RetryStorage } from '../../src/storage/wrappers/retry.js';
import { expectCode, storageContract } from './contract.js';

const noSleep = async () => {};

/** A store whose get() fails with `error` the first `failures` times. */
function flaky(failures: number, error: () => LifeboatError): { storage: Storage; calls: () => number } {
  const inner = new MemoryStorage();
  let calls = 0;
  const storage = Object.assign(Object.create(inner) as MemoryStorage, {
    get: async (key: string) => {
      calls++;
      if (calls <= failures) throw error();
      return inner.get(key);
    },
  });
  return { storage, calls: () => calls };
}

const unavailable = () => new LifeboatError('STORAGE_UNAVAILABLE', 'test outage');

describe('retry wrapper', () => {
  it('retries retryable errors and succeeds within the attempt budget', async () => {
    const { storage, calls } = flaky(2, unavailable);
    await storage.put('k', Buffer.from('v'));
    const delays: number[] = [];
    const retry = new RetryStorage(storage, { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000, sleep: async (ms) => void delays.push(ms), random: () => 0.5 });
    assert.equal((await retry.get('k')).toString(), 'v');
    assert.equal(calls(), 3);
    assert.deepEqual(delays, [50, 100], 'exponential backoff with jitter 0.5');
  });

  it('gives up after maxAttempts with the last error', async () => {
    const { storage, calls } = flaky(10, unavailable);
    const retry = new RetryStorage(storage, { maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 1, sleep: noSleep });
    await expectCode(retry.get('k'), 'STORAGE_UNAVAILABLE');
    assert.equal(calls(), 4);
  });

  it('does not retry errors that are not retryable', async () => {
    const { storage, calls } = flaky(10, () => new LifeboatError('STORAGE_AUTH', 'refused'));
    const retry = new RetryStorage(storage, { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 1, sleep: noSleep });
    await expectCode(retry.get('k'), 'STORAGE_AUTH');
    assert.equal(calls(), 1);
  });

  it('caps backoff at maxDelayMs', () => {
    const retry = new RetryStorage(new MemoryStorage(), { maxAttempts: 20, baseDelayMs: 100, maxDelayMs: 1000, random: () => 0.999 });
    assert.equal(retry.backoffMs(1), 99);
    assert.equal(retry.backoffMs(15), 999);
  });

  it("treats its own earlier create-only write as success, but not a stranger's", async () => {
    // The first attempt stores the object and loses the reply; the retry meets STORAGE_PRECONDITION.
    const mem = new MemoryStorage();
    const lostReply = new RetryStorage(
      Object.assign(Object.create(mem) as MemoryStorage, {
        put: async (key: string, data: Uint8Array, o?: { ifNoneMatch?: boolean }) => {
          const existed = (await mem.stat(key)) !== undefined;
          await mem.put(key, data, o);
          if (!existed) throw unavailable();
        },
      }),
      { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1, sleep: noSleep },
    );
    await lostReply.put('lock', Buffer.from('me'), { ifNoneMatch: true });
    assert.equal((await mem.get('lock')).toString(), 'me');
    await expectCode(lostReply.put('lock', Buffer.from('other'), { ifNoneMatch: true }), 'STORAGE_PRECONDITION');
    assert.equal((await mem.get('lock')).toString(), 'me');
  });

  it('resumes a failed listing after the last key it yielded, without duplicates', async () => {
    const mem = new MemoryStorage();
    for (let i = 0; i < 30; i++) await mem.put(`k/${String(i).padStart(2, '0')}`, Buffer.from([i]));
    const faults = new FaultStorage(mem, { seed: 7, failureProbability: { list: 0.7 } });
    const retry = new RetryStorage(faults, { maxAttempts: 50, baseDelayMs: 1, maxDelayMs: 1, sleep: noSleep });
    const keys = (await listAll(retry, 'k/')).map((i) => i.key);
    assert.deepEqual(keys, (await listAll(mem, 'k/')).map((i) => i.key));
    assert.ok(faults.injected.failures > 0, 'the listing did fail part-way');
  });
});

describe('limit wrapper', () => {
  it('never has more than N operations in flight and serves waiters in FIFO order', async () => {
    const mem = new MemoryStorage();
    let inFlight = 0;
    let peak = 0;
    const started: string[] = [];
    const slow = Object.assign(Object.create(mem) as MemoryStorage, {
      put: async (key: string, data: Uint8Array) => {
        started.push(key);
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 2));
        inFlight--;
        return mem.put(key, data);
      },
    });
    const limited = new LimitStorage(slow, 3);
    const keys = Array.from({ length: 20 }, (_, i) => `k${String(i).padStart(2, '0')}`);
    await Promise.all(keys.map((k) => limited.put(k, Buffer.from(k))));
    assert.equal(peak, 3);
    assert.deepEqual(started, keys);
  });

  it('lets a caller read objects inside a listing loop with a limit of one', async () => {
    const mem = new MemoryStorage();
    await mem.put('a', Buffer.from('1'));
    await mem.put('b', Buffer.from('2'));
    const limited = new LimitStorage(mem, 1);
    const seen: string[] = [];
    for await (const info of limited.list('')) seen.push((await limited.get(info.key)).toString());
    assert.deepEqual(seen, ['1', '2']);
  });

  it('refuses a limit below one', () => {
    assert.throws(() => new LimitStorage(new MemoryStorage(), 0), (e: unknown) => e instanceof LifeboatError && e.code === 'CONFIG_INVALID');
  });
});

describe('metrics wrapper', () => {
  it('counts calls, bytes in and out, and errors per operation and code', async () => {
    const m = new MetricsStorage(new MemoryStorage());
    await m.put('a', Buffer.alloc(10));
    await m.put('b', Buffer.alloc(5));
    await m.get('a');
    await m.get('a', { offset: 8, length: 100 });
    await expectCode(m.get('missing'), 'NOT_FOUND');
    await m.stat('a');
    await listAll(m, '');
    await m.delete('a');
    const before = m.snapshot();
    await m.get('b');
    assert.equal(before.bytesOut, 15);
    assert.equal(before.bytesIn, 12);
    assert.deepEqual({ ...before.ops.get, totalMs: 0 }, { calls: 3, errors: 1, errorsByCode: { NOT_FOUND: 1 }, totalMs: 0 });
    assert.equal(before.ops.put.calls, 2);
    assert.equal(before.ops.list.calls, 1);
    assert.equal(before.ops.stat.calls, 1);
    assert.equal(before.ops.delete.calls, 1);
    assert.equal(m.snapshot().ops.get.calls, 4, 'a snapshot is a copy, later calls show in the next one');
    assert.ok(Object.isFrozen(before) && Object.isFrozen(before.ops.get));
  });
});

describe('fault wrapper', () => {
  it('is reproducible from its seed', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const seqA = Array.from({ length: 5 }, a);
    assert.deepEqual(seqA, Array.from({ length: 5 }, b));
    assert.ok(seqA.every((x) => x >= 0 && x < 1));
    assert.notDeepEqual(seqA, Array.from({ length: 5 }, seededRandom(43)));
  });

  it('truncated partial writes leave a prefix for the layers above to detect', async () => {
    const mem = new MemoryStorage();
    const faults = new FaultStorage(mem, { seed: 3, partialWrite: { probability: 1, mode: 'truncated' } });
    await expectCode(faults.put('k', Buffer.alloc(1000, 1)), 'STORAGE_UNAVAILABLE');
    const left = mem.rawObject('k');
    assert.ok(left && left.length < 1000, 'a truncated object is stored');
    assert.equal(faults.injected.partialWrites, 1);
  });

  it('partial writes in mode nothing leave nothing', async () => {
    const mem = new MemoryStorage();
    const faults = new FaultStorage(mem, { seed: 3, partialWrite: { probability: 1, mode: 'nothing' } });
    await expectCode(faults.put('k', Buffer.alloc(1000, 1)), 'STORAGE_UNAVAILABLE');
    assert.equal(await mem.stat('k'), undefined);
  });

  it('adds latency through the injected sleep', async () => {
    const waits: number[] = [];
    const faults = new FaultStorage(new MemoryStorage(), { seed: 1, latency: { minMs: 10, maxMs: 20 }, sleep: async (ms) => void waits.push(ms) });
    await faults.stat('k');
    assert.equal(waits.length, 1);
    assert.ok((waits[0] ?? 0) >= 10 && (waits[0] ?? 0) <= 20);
  });
});

// The contract holds through outages (before and after the store acted), lost replies and
// latency, once retry sits on top: the wiring the registry uses.
let seed = 0;
storageContract(
  'memory with faults under retry',
  async () => {
    const faults = new FaultStorage(new MemoryStorage(), {
      seed: ++seed,
      failureProbability: { put: 0.2, get: 0.2, stat: 0.2, list: 0.2, delete: 0.2 },
      failurePoint: 'either',
      partialWrite: { probability: 0.05, mode: 'nothing' },
      latency: { minMs: 0, maxMs: 1 },
    });
    return new RetryStorage(new LimitStorage(new MetricsStorage(faults), 4), { maxAttempts: 12, baseDelayMs: 1, maxDelayMs: 2 });
  },
  { conditionalCreate: true },
);
