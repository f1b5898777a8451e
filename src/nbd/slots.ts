import { LifeboatError } from '../core/errors.js';

/** A counting semaphore: at most `size` holders; waiters are served first come, first served. */
export class Slots {
  private free: number;
  private readonly waiters: Array<() => void> = [];

  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 1) throw new LifeboatError('INTERNAL', 'Slots size must be >= 1');
    this.free = size;
  }

  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Hands the slot straight to the next waiter, if any. */
  release(): void {
    const next = this.waiters.shift();
    if (next !== undefined) next();
    else this.free++;
  }
}
