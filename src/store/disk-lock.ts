import { hostname } from 'node:os';
import { LifeboatError, isLifeboatError } from '../core/errors.js';
import { lockKey, LOCKS_PREFIX } from '../format/layout.js';
import { randomHex } from '../format/ids.js';
import type { Repository } from './repository.js';

/** A lock not refreshed for this long is considered abandoned. */
export const LOCK_TTL_MS = 10 * 60 * 1000;
const REFRESH_MS = 60 * 1000;

/**
 * Owners of locks this process took and no longer holds, whose lock object may still be in
 * the store: the release that should have deleted it did not reach the store (an outage
 * when the operation ended), or the create-only put failed without an answer. Such a lock
 * is abandoned for certain, so this process takes it over at once instead of waiting
 * LOCK_TTL_MS. Without this, the replica processor made no point for ten minutes after a
 * storage outage, locked out by its own lock. Entries leave once the object is known gone.
 */
const leftBehindHere = new Set<string>();

export interface LockRecord {
  readonly owner: string;
  readonly host: string;
  readonly pid: number;
  readonly operation: string;
  readonly acquiredAt: string;
  readonly refreshedAt: string;
}

/**
 * One writer per disk. The lock is an object created with create-only put, so
 * two writers racing for it cannot both win (on stores that enforce
 * conditional create; see the storage capabilities). It is refreshed while held
 * and doubles as the marker gc uses to see writers at work.
 */
export class DiskLock {
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly repo: Repository,
    readonly disk: string,
    private record: LockRecord,
  ) {}

  static async acquire(repo: Repository, disk: string, operation: string, options: { breakLock?: boolean } = {}): Promise<DiskLock> {
    const now = repo.clock.now().toISOString();
    const record: LockRecord = { owner: randomHex(8), host: hostname(), pid: process.pid, operation, acquiredAt: now, refreshedAt: now };
    const key = lockKey(disk);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await repo.storage.put(key, Buffer.from(JSON.stringify(record)), { ifNoneMatch: true });
        const lock = new DiskLock(repo, disk, record);
        lock.timer = setInterval(() => void lock.refresh().catch(() => undefined), REFRESH_MS);
        lock.timer.unref();
        return lock;
      } catch (err) {
        if (!isLifeboatError(err, 'STORAGE_PRECONDITION')) {
          // The put may have landed without its answer reaching us.
          leftBehindHere.add(record.owner);
          throw err;
        }
        const held = await readLock(repo, disk);
        const age = held ? repo.clock.now().getTime() - Date.parse(held.refreshedAt) : Infinity;
        const leftHere = held !== undefined && leftBehindHere.has(held.owner);
        if (attempt === 0 && (options.breakLock || leftHere || !(age < LOCK_TTL_MS))) {
          await repo.storage.delete(key);
          if (held) leftBehindHere.delete(held.owner);
          continue;
        }
        throw new LifeboatError('DISK_LOCKED', `disk ${disk} is being written by ${held?.operation ?? 'another writer'} on ${held?.host ?? '?'} (pid ${held?.pid ?? '?'}) since ${held?.acquiredAt ?? '?'}`, {
          details: { disk, holder: held },
        });
      }
    }
    throw new LifeboatError('DISK_LOCKED', `disk ${disk} is locked`, { details: { disk } });
  }

  private async refresh(): Promise<void> {
    const held = await readLock(this.repo, this.disk);
    if (held?.owner !== this.record.owner) return; // lost it; commit will find out
    this.record = { ...this.record, refreshedAt: this.repo.clock.now().toISOString() };
    await this.repo.storage.put(lockKey(this.disk), Buffer.from(JSON.stringify(this.record)));
  }

  /** Throws DISK_LOCKED if another writer broke and took the lock meanwhile. */
  async check(): Promise<void> {
    const held = await readLock(this.repo, this.disk);
    if (held?.owner !== this.record.owner) {
      throw new LifeboatError('DISK_LOCKED', `lost the lock on disk ${this.disk} to another writer; nothing was committed`, { details: { disk: this.disk } });
    }
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    // The operation is over: if the delete below does not reach the store, the next acquire here takes the lock over.
    leftBehindHere.add(this.record.owner);
    const held = await readLock(this.repo, this.disk);
    if (held?.owner === this.record.owner) await this.repo.storage.delete(lockKey(this.disk));
    leftBehindHere.delete(this.record.owner);
  }
}

export async function readLock(repo: Repository, disk: string): Promise<LockRecord | undefined> {
  try {
    return JSON.parse((await repo.storage.get(lockKey(disk))).toString('utf8')) as LockRecord;
  } catch (err) {
    if (isLifeboatError(err, 'NOT_FOUND')) return undefined;
    if (err instanceof SyntaxError) return undefined;
    throw err;
  }
}

/** Locks refreshed within the TTL: writers that may still reference what gc sees as garbage. */
export async function activeLocks(repo: Repository): Promise<(LockRecord & { disk: string })[]> {
  const out: (LockRecord & { disk: string })[] = [];
  for await (const info of repo.storage.list(LOCKS_PREFIX)) {
    const disk = info.key.slice(LOCKS_PREFIX.length);
    const rec = await readLock(repo, disk);
    if (rec && repo.clock.now().getTime() - Date.parse(rec.refreshedAt) < LOCK_TTL_MS) out.push({ ...rec, disk });
  }
  return out;
}
