import type { Clock } from './clock.js';

/**
 * A token bucket on bytes sent: `take(n)` spends n tokens and, when that leaves
 * the bucket in debt, waits until the debt is paid back at `bytesPerSec`. A
 * segment (up to 16 MiB) larger than the bucket is sent whole and the wait comes
 * after it, so the long-run rate is the configured one whatever the segment size.
 * The bucket holds at most one second of tokens (the burst). Rate 0 = no limit.
 */
export class TokenBucket {
  private rate = 0;
  private tokens = 0;
  private last: number;

  constructor(
    private readonly clock: Clock,
    bytesPerSec = 0,
  ) {
    this.last = clock.now();
    this.setRate(bytesPerSec);
  }

  get bytesPerSec(): number {
    return this.rate;
  }

  /** Changes the rate at once (the vault's throttle can change on any heartbeat). */
  setRate(bytesPerSec: number): void {
    if (!Number.isFinite(bytesPerSec) || bytesPerSec < 0) bytesPerSec = 0;
    if (bytesPerSec === this.rate) return;
    this.refill();
    this.rate = bytesPerSec;
    this.tokens = Math.min(this.tokens, bytesPerSec);
  }

  /** Spends `bytes`; resolves when they may be sent (early, without throwing, when `signal` aborts). */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.rate === 0) return;
    this.refill();
    this.tokens -= bytes;
    while (this.tokens < 0 && this.rate > 0 && !signal?.aborted) {
      await this.clock.sleep(Math.ceil((-this.tokens * 1000) / this.rate), signal);
      this.refill();
    }
  }

  private refill(): void {
    const now = this.clock.now();
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    if (this.rate > 0) this.tokens = Math.min(this.rate, this.tokens + (elapsed * this.rate) / 1000);
  }
}
