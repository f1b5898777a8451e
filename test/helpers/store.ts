import { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { Repository, type Clock } from '../../src/store/repository.js';

/** scrypt cost for tests: the real cost adds seconds per open and proves nothing more. */
export const TEST_SCRYPT = { N: 2 ** 10, r: 8, p: 1 };
export const PASS = 'correct horse battery staple';

export async function memoryRepo(options: { chunkSizeBytes?: number; clock?: Clock } = {}) {
  const storage = new MemoryStorage(options.clock ? { now: () => options.clock!.now() } : {});
  const { repo, recoveryKey } = await Repository.init(storage, { passphrase: PASS, scrypt: TEST_SCRYPT, ...options });
  return { storage, repo, recoveryKey };
}

/** A clock tests move by hand. */
export class FakeClock implements Clock {
  constructor(private t = Date.parse('2026-11-01T00:00:00Z')) {}
  now(): Date {
    return new Date(this.t);
  }
  advance(ms: number): void {
    this.t += ms;
  }
}
