import { LifeboatError } from '../../core/errors.js';
import { sleep } from '../../core/sleep.js';

/**
 * Polls `probe` every `intervalMs` (default 250) until it returns a value; TIMEOUT after
 * `timeoutMs`, saying what was awaited. An aborted `signal` ends the wait with the
 * abort's reason.
 */
export async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, options: { intervalMs?: number; signal?: AbortSignal } = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    options.signal?.throwIfAborted();
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new LifeboatError('TIMEOUT', `timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(options.intervalMs ?? 250, options.signal);
  }
}
