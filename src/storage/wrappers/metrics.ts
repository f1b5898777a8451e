import { asLifeboatError } from '../../core/errors.js';
import type { ByteRange, ObjectInfo, PutOptions, Storage, StorageCapabilities } from '../storage.js';

export type StorageOp = 'put' | 'get' | 'stat' | 'list' | 'delete';
export const STORAGE_OPS: readonly StorageOp[] = ['put', 'get', 'stat', 'list', 'delete'];

export interface OpMetrics {
  /** Calls started (a listing counts once, however many items it yields). */
  readonly calls: number;
  /** Calls that threw. */
  readonly errors: number;
  /** Thrown errors by LifeboatError code. */
  readonly errorsByCode: Readonly<Record<string, number>>;
  /** Wall time spent in finished calls. */
  readonly totalMs: number;
}

export interface MetricsSnapshot {
  readonly ops: Readonly<Record<StorageOp, OpMetrics>>;
  /** Bytes read from the store by get(). */
  readonly bytesIn: number;
  /** Bytes handed to the store by put(), failed puts included. */
  readonly bytesOut: number;
}

interface MutableOp {
  calls: number;
  errors: number;
  errorsByCode: Record<string, number>;
  totalMs: number;
}

/**
 * Counts operations, errors per operation and bytes moved. It sits inside the
 * retry wrapper, so every attempt counts: a retried get shows as several calls.
 * `now` is injectable for tests that check timings.
 */
export class MetricsStorage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities;
  private readonly ops: Record<StorageOp, MutableOp>;
  private bytesIn = 0;
  private bytesOut = 0;

  constructor(
    private readonly inner: Storage,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.url = inner.url;
    this.capabilities = inner.capabilities;
    const fresh = (): MutableOp => ({ calls: 0, errors: 0, errorsByCode: {}, totalMs: 0 });
    this.ops = { put: fresh(), get: fresh(), stat: fresh(), list: fresh(), delete: fresh() };
  }

  /** A frozen copy: later operations do not change it. */
  snapshot(): MetricsSnapshot {
    const ops = Object.fromEntries(
      STORAGE_OPS.map((op) => {
        const m = this.ops[op];
        return [op, Object.freeze({ ...m, errorsByCode: Object.freeze({ ...m.errorsByCode }) })];
      }),
    ) as Record<StorageOp, OpMetrics>;
    return Object.freeze({ ops: Object.freeze(ops), bytesIn: this.bytesIn, bytesOut: this.bytesOut });
  }

  put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    this.bytesOut += data.length;
    return this.measure('put', () => this.inner.put(key, data, options));
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    const data = await this.measure('get', () => this.inner.get(key, range));
    this.bytesIn += data.length;
    return data;
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.measure('stat', () => this.inner.stat(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const m = this.ops.list;
    m.calls++;
    const started = this.now();
    try {
      yield* this.inner.list(prefix);
    } catch (err) {
      this.countError(m, err);
      throw err;
    } finally {
      m.totalMs += this.now() - started;
    }
  }

  delete(key: string): Promise<void> {
    return this.measure('delete', () => this.inner.delete(key));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async measure<T>(op: StorageOp, run: () => Promise<T>): Promise<T> {
    const m = this.ops[op];
    m.calls++;
    const started = this.now();
    try {
      return await run();
    } catch (err) {
      this.countError(m, err);
      throw err;
    } finally {
      m.totalMs += this.now() - started;
    }
  }

  private countError(m: MutableOp, err: unknown): void {
    m.errors++;
    const code = asLifeboatError(err).code;
    m.errorsByCode[code] = (m.errorsByCode[code] ?? 0) + 1;
  }
}
