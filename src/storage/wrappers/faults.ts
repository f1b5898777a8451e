import { LifeboatError } from '../../core/errors.js';
import type { ByteRange, ObjectInfo, PutOptions, Storage, StorageCapabilities } from '../storage.js';
import type { StorageOp } from './metrics.js';

/**
 * Where an injected failure strikes: `before` the operation reaches the store (nothing
 * happened), `after` it took effect (the reply was lost), or `either`, chosen per call.
 */
export type FailurePoint = 'before' | 'after' | 'either';

/**
 * A put that dies part-way. `truncated` leaves a prefix of the data stored under the
 * key, as a broken driver or a non-atomic service would, so the layers above must
 * detect truncation; `nothing` stores nothing. Both then throw STORAGE_UNAVAILABLE.
 */
export interface PartialWriteFault {
  readonly probability: number;
  readonly mode: 'truncated' | 'nothing';
}

export interface FaultOptions {
  /** Seeds the PRNG: the same seed and call order give the same faults. */
  readonly seed: number;
  /** Probability per call that an operation throws STORAGE_UNAVAILABLE. */
  readonly failureProbability?: Partial<Record<StorageOp, number>>;
  readonly failurePoint?: FailurePoint;
  /** Latency added to every call, uniform in [minMs, maxMs]. */
  readonly latency?: { readonly minMs: number; readonly maxMs: number };
  readonly partialWrite?: PartialWriteFault;
  readonly sleep?: (ms: number) => Promise<void>;
}

/** mulberry32: a small, fast, seedable PRNG returning uniform numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A listing fails, if at all, before one of its first this-many items. */
const LIST_FAILURE_SPAN = 8;

/**
 * A fault-injecting wrapper for tests: random outages (STORAGE_UNAVAILABLE, retryable),
 * added latency and partial writes, all drawn from a seeded PRNG so a failing run can
 * be reproduced. `injected` counts the faults it produced.
 */
export class FaultStorage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities;
  readonly injected = { failures: 0, partialWrites: 0 };
  private readonly random: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly inner: Storage,
    private readonly options: FaultOptions,
  ) {
    this.url = inner.url;
    this.capabilities = inner.capabilities;
    this.random = seededRandom(options.seed);
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    await this.delay();
    const partial = this.options.partialWrite;
    if (partial && this.random() < partial.probability) {
      this.injected.partialWrites++;
      if (partial.mode === 'truncated') {
        await this.inner.put(key, data.subarray(0, Math.floor(data.length * this.random())), options);
      }
      throw this.fault('put', key);
    }
    return this.faulty('put', key, () => this.inner.put(key, data, options));
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    await this.delay();
    return this.faulty('get', key, () => this.inner.get(key, range));
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    await this.delay();
    return this.faulty('stat', key, () => this.inner.stat(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    await this.delay();
    const failAt = this.strikes('list') ? Math.floor(this.random() * LIST_FAILURE_SPAN) : -1;
    let index = 0;
    for await (const info of this.inner.list(prefix)) {
      if (index++ === failAt) throw this.fault('list', prefix);
      yield info;
    }
  }

  async delete(key: string): Promise<void> {
    await this.delay();
    return this.faulty('delete', key, () => this.inner.delete(key));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async faulty<T>(op: StorageOp, key: string, run: () => Promise<T>): Promise<T> {
    if (!this.strikes(op)) return run();
    const point = this.options.failurePoint ?? 'before';
    const after = point === 'after' || (point === 'either' && this.random() < 0.5);
    if (after) await run();
    throw this.fault(op, key);
  }

  private strikes(op: StorageOp): boolean {
    const p = this.options.failureProbability?.[op] ?? 0;
    return p > 0 && this.random() < p;
  }

  private fault(op: StorageOp, key: string): LifeboatError {
    this.injected.failures++;
    return new LifeboatError('STORAGE_UNAVAILABLE', 'injected storage fault', { details: { op, key, injected: true } });
  }

  private async delay(): Promise<void> {
    const latency = this.options.latency;
    if (!latency) return;
    await this.sleep(latency.minMs + this.random() * (latency.maxMs - latency.minMs));
  }
}
