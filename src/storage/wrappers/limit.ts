import { LifeboatError } from '../../core/errors.js';
import type { ByteRange, ObjectInfo, PutOptions, Storage, StorageCapabilities } from '../storage.js';

/** A counting semaphore that wakes waiters in arrival order. */
export class FifoSemaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new LifeboatError('CONFIG_INVALID', 'concurrency limit must be a positive integer', { details: { limit } });
    }
  }

  async run<T>(op: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await op();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next(); // the slot passes straight to the next waiter: `active` stays the same
    else this.active--;
  }
}

/**
 * At most `limit` operations of the inner store in flight; the rest wait in FIFO
 * order. A listing holds a slot only while it fetches its next item, never while
 * the caller works on one, so a caller that reads objects inside a listing loop
 * cannot deadlock itself.
 */
export class LimitStorage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities;
  private readonly slots: FifoSemaphore;

  constructor(
    private readonly inner: Storage,
    limit: number,
  ) {
    this.url = inner.url;
    this.capabilities = inner.capabilities;
    this.slots = new FifoSemaphore(limit);
  }

  put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    return this.slots.run(() => this.inner.put(key, data, options));
  }

  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.slots.run(() => this.inner.get(key, range));
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.slots.run(() => this.inner.stat(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const iterator = this.inner.list(prefix)[Symbol.asyncIterator]();
    let done = false;
    try {
      while (true) {
        const next = await this.slots.run(() => iterator.next());
        if (next.done) {
          done = true;
          return;
        }
        yield next.value;
      }
    } finally {
      if (!done) await iterator.return?.();
    }
  }

  delete(key: string): Promise<void> {
    return this.slots.run(() => this.inner.delete(key));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
