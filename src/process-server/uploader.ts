import { readFile } from 'node:fs/promises';
import { asLifeboatError, isLifeboatError, LifeboatError } from '../core/errors.js';
import { segmentKey } from '../format/layout.js';
import type { JournalSegment } from '../format/segment.js';
import { putSealedSegment, readSegment } from '../store/journal.js';
import type { ProcessServerBackend, ProcessServerLogger } from './backend.js';
import type { SealPool } from './seal-pool.js';
import type { Spool, SpoolEntry } from './spool.js';
import { spooledSegment } from './spooled-segment.js';

export interface UploaderOptions {
  readonly spool: Spool;
  readonly pool: SealPool;
  readonly backend: ProcessServerBackend;
  readonly logger: ProcessServerLogger;
  /** Segments sealed or being put at once; each holds one sealed segment in memory. */
  readonly concurrency: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
}

interface Job {
  readonly entry: SpoolEntry;
  attempts: number;
  /** performance.now() before which it is not tried again. */
  notBefore: number;
  busy: boolean;
  /** Kept in the spool and never retried: its data differs from the store's, or the file is damaged. */
  stuck: boolean;
}

/**
 * Moves spooled segments into their vault's store: seal on a worker thread,
 * putSealedSegment (create-only), then delete the spool file. Segments are
 * uploaded several at once (the store names segments by sequence); a segment is
 * deleted from the spool only once the store holds it.
 *
 * - Failures (storage outage, a vault not answering) retry with exponential
 *   backoff for as long as it takes. While a segment of a disk waits out its
 *   backoff, the disk's later segments wait for it, and once one of the disk's
 *   segments is stored the others are tried at once: after an outage the store
 *   gets them in order, so the replica processor never meets a gap that is only
 *   an upload still to come (it raised a critical journal-gap alert for as long
 *   as the backoffs lasted, up to retryMaxMs).
 * - CONFLICT: the store has the segment already (a previous process died after
 *   the put). The stored one is read back and compared; equal is success,
 *   different keeps the file and raises an error in the stats: unknown data is
 *   never deleted.
 * - GENERATION_FENCED: the source was failed over away from; the segment is
 *   dropped, the generation is marked fenced in the spool and refused from then on.
 */
export class Uploader {
  private readonly jobs: Job[] = [];
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly idleWaiters: (() => void)[] = [];
  segmentsUploaded = 0;
  uploadErrors = 0;
  lastUploadError: string | null = null;

  constructor(private readonly o: UploaderOptions) {}

  enqueue(entry: SpoolEntry): void {
    if (this.stopped) return;
    this.jobs.push({ entry, attempts: 0, notBefore: 0, busy: false, stuck: false });
    this.pump();
  }

  /** When the oldest segment still in the spool was spooled (undefined: none). */
  oldestSpooledAtMs(): number | undefined {
    let oldest: number | undefined;
    for (const j of this.jobs) if (oldest === undefined || j.entry.spooledAtMs < oldest) oldest = j.entry.spooledAtMs;
    return oldest;
  }

  get pending(): number {
    return this.jobs.length;
  }

  /** Resolves when nothing uploadable is left (stuck segments aside). */
  drained(): Promise<void> {
    if (this.jobs.every((j) => j.stuck)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops taking segments; waits for the uploads under way. What is left stays in the spool for the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    while (this.running > 0) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  private pump(): void {
    if (this.stopped) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const t = performance.now();
    let wakeAt = Infinity;
    // Per disk and generation, the lowest sequence waiting out a backoff: later ones wait behind it.
    const backingOff = new Map<string, number>();
    for (const job of this.jobs) {
      if (job.busy || job.stuck || job.notBefore <= t) continue;
      const key = streamOf(job);
      backingOff.set(key, Math.min(backingOff.get(key) ?? Infinity, job.entry.sequence));
    }
    for (const job of this.jobs) {
      if (this.running >= this.o.concurrency) break;
      if (job.busy || job.stuck) continue;
      if (job.notBefore > t) {
        wakeAt = Math.min(wakeAt, job.notBefore);
        continue;
      }
      if (job.entry.sequence > (backingOff.get(streamOf(job)) ?? Infinity)) continue;
      job.busy = true;
      this.running++;
      void this.run(job).finally(() => {
        job.busy = false;
        this.running--;
        this.pump();
      });
    }
    if (this.running < this.o.concurrency && wakeAt !== Infinity) {
      this.timer = setTimeout(() => this.pump(), Math.max(1, wakeAt - t));
      this.timer.unref();
    }
    if (this.jobs.every((j) => j.stuck)) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private done(job: Job): void {
    const i = this.jobs.indexOf(job);
    if (i >= 0) this.jobs.splice(i, 1);
  }

  private error(job: Job, err: LifeboatError, message: string): void {
    this.uploadErrors++;
    this.lastUploadError = `${job.entry.disk}/${job.entry.generation}/${job.entry.sequence}: ${err.code}: ${err.message}`;
    const { disk, generation, sequence } = job.entry;
    this.o.logger.error({ disk, generation, sequence, code: err.code, err: err.message, attempts: job.attempts }, message);
  }

  private async run(job: Job): Promise<void> {
    const { disk, generation, sequence } = job.entry;
    job.attempts++;
    try {
      if (this.o.spool.isFenced(disk, generation)) {
        await this.drop(job, new LifeboatError('GENERATION_FENCED', `generation ${generation} of disk ${disk} is fenced`));
        return;
      }
      const vaultId = this.o.spool.vaultOf(disk);
      if (vaultId === undefined) throw new LifeboatError('INTERNAL', `the spool does not record which vault disk ${disk} belongs to`);
      const repo = await this.o.backend.repository(vaultId);
      const sealed = await this.o.pool.seal({ path: job.entry.path, disk, generation, sequence, storeId: repo.config.storeId, encKey: new Uint8Array(repo.key.encKey) });
      try {
        await putSealedSegment(repo, disk, generation, sequence, sealed);
      } catch (err) {
        if (!isLifeboatError(err, 'CONFLICT')) throw err;
        const stored = await readSegment(repo, disk, { key: segmentKey(disk, generation, sequence), generation, sequence, sizeBytes: 0 });
        const ours = spooledSegment(await readFile(job.entry.path), { disk, generation, sequence, path: job.entry.path });
        if (!sameSegment(stored, ours)) {
          job.stuck = true;
          this.error(job, new LifeboatError('CONFLICT', `the store holds a different segment ${sequence} of ${disk}/${generation}; the spool file is kept`, { cause: err }), 'spooled segment differs from the stored one');
          return;
        }
        this.o.logger.info({ disk, generation, sequence }, 'segment already in the store');
      }
      await this.o.spool.remove(job.entry);
      this.done(job);
      this.segmentsUploaded++;
      // The store answers again: the disk's segments still backing off are tried now.
      for (const j of this.jobs) if (!j.busy && !j.stuck && streamOf(j) === streamOf(job)) j.notBefore = 0;
    } catch (err) {
      const e = asLifeboatError(err);
      if (e.code === 'GENERATION_FENCED') {
        await this.drop(job, e);
        return;
      }
      if (e.code === 'CORRUPT_OBJECT' && e.details.object === job.entry.path) {
        job.stuck = true; // a damaged spool file: kept for inspection, never uploaded
        this.error(job, e, 'spooled segment is damaged');
        return;
      }
      const delay = Math.min(this.o.retryMaxMs, this.o.retryBaseMs * 2 ** Math.min(job.attempts - 1, 20));
      job.notBefore = performance.now() + delay * (0.75 + Math.random() / 2);
      this.error(job, e, 'segment upload failed; retrying');
    }
  }

  private async drop(job: Job, err: LifeboatError): Promise<void> {
    const { disk, generation } = job.entry;
    this.error(job, err, 'segment of a fenced generation dropped');
    try {
      if (!this.o.spool.isFenced(disk, generation)) await this.o.spool.markFenced(disk, generation);
      await this.o.spool.remove(job.entry);
      this.done(job);
    } catch (e) {
      job.notBefore = performance.now() + this.o.retryMaxMs;
      this.error(job, asLifeboatError(e), 'dropping a fenced segment failed');
    }
  }
}

function streamOf(job: Job): string {
  return `${job.entry.disk}/${job.entry.generation}`;
}

/** Whether two segments carry the same change: flags, disk size, capture time and every extent's bytes. */
export function sameSegment(a: JournalSegment, b: JournalSegment): boolean {
  if ((a.flags ?? 0) !== (b.flags ?? 0) || a.diskSizeBytes !== b.diskSizeBytes || a.createdAtMs !== b.createdAtMs) return false;
  if (a.generation !== b.generation || a.sequence !== b.sequence || a.extents.length !== b.extents.length) return false;
  return a.extents.every((e, i) => {
    const f = b.extents[i];
    return f !== undefined && e.offset === f.offset && e.data.equals(f.data);
  });
}
