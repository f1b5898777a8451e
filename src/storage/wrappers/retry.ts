import { isLifeboatError, LifeboatError } from '../../core/errors.js';
import type { ByteRange, ObjectInfo, PutOptions, Storage, StorageCapabilities } from '../storage.js';

export interface RetryOptions {
  /** Attempts per operation, the first included; 1 disables retry. */
  readonly maxAttempts: number;
  /** Cap of the first backoff; attempt n waits up to baseDelayMs * 2^(n-1). */
  readonly baseDelayMs: number;
  /** No backoff is longer than this. */
  readonly maxDelayMs: number;
  /** Injected so tests run without waiting. */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Uniform in [0, 1); injected so tests are reproducible. */
  readonly random?: () => number;
}

export const DEFAULT_RETRY: RetryOptions = Object.freeze({ maxAttempts: 5, baseDelayMs: 100, maxDelayMs: 10_000 });

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Repeats operations that failed with a retryable LifeboatError (STORAGE_UNAVAILABLE,
 * throttling), with exponential backoff and full jitter; other errors pass through at
 * once. Every operation of the contract is safe to repeat, with one subtlety handled
 * here: a create-only put whose earlier attempt failed in transit may have created the
 * object itself, so a later STORAGE_PRECONDITION counts as success when the stored
 * bytes equal ours (identical content means the outcome is the same as our write).
 * A listing that fails part-way resumes after the last key it yielded.
 */
export class RetryStorage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;

  constructor(
    private readonly inner: Storage,
    private readonly options: RetryOptions = DEFAULT_RETRY,
  ) {
    if (!Number.isSafeInteger(options.maxAttempts) || options.maxAttempts < 1) {
      throw new LifeboatError('CONFIG_INVALID', 'retry maxAttempts must be a positive integer', { details: { maxAttempts: options.maxAttempts } });
    }
    this.url = inner.url;
    this.capabilities = inner.capabilities;
    this.sleep = options.sleep ?? realSleep;
    this.random = options.random ?? Math.random;
  }

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    let failedInTransit = false;
    return this.run(async () => {
      try {
        await this.inner.put(key, data, options);
      } catch (err) {
        if (options.ifNoneMatch && failedInTransit && isLifeboatError(err, 'STORAGE_PRECONDITION') && (await this.holds(key, data))) return;
        failedInTransit ||= isRetryable(err);
        throw err;
      }
    });
  }

  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.run(() => this.inner.get(key, range));
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.run(() => this.inner.stat(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let last: string | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const info of this.inner.list(prefix)) {
          if (last !== undefined && info.key <= last) continue; // already yielded before the failure
          last = info.key;
          yield info;
        }
        return;
      } catch (err) {
        if (!isRetryable(err) || attempt >= this.options.maxAttempts) throw err;
        await this.sleep(this.backoffMs(attempt));
      }
    }
  }

  delete(key: string): Promise<void> {
    return this.run(() => this.inner.delete(key));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** The wait before attempt `attempt + 1`: uniform in [0, min(max, base * 2^(attempt-1))). */
  backoffMs(attempt: number): number {
    const cap = Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (attempt - 1));
    return Math.floor(this.random() * cap);
  }

  private async run<T>(op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!isRetryable(err) || attempt >= this.options.maxAttempts) throw err;
        await this.sleep(this.backoffMs(attempt));
      }
    }
  }

  private async holds(key: string, data: Uint8Array): Promise<boolean> {
    try {
      const stored = await this.run(() => this.inner.get(key));
      return stored.equals(data);
    } catch (err) {
      if (isLifeboatError(err, 'NOT_FOUND')) return false; // deleted meanwhile: not ours to claim
      throw err;
    }
  }
}

function isRetryable(err: unknown): boolean {
  return isLifeboatError(err) && err.retryable;
}
