import { setTimeout as delay } from 'node:timers/promises';

/**
 * Waits `ms`, or less when `signal` aborts; resolves either way, so a polling loop
 * looks at its signal after the wait and ends in its own words.
 */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  await delay(ms, undefined, signal ? { signal } : undefined).catch((err: unknown) => {
    if (!signal?.aborted) throw err;
  });
}
