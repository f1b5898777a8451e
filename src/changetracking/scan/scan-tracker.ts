import { randomUUID } from 'node:crypto';
import { LifeboatError } from '../../core/errors.js';
import { DigestMap, type PendingDigests } from '../digest-map.js';
import type { ChangedExtent, ChangeTracker, Cut, TrackerCapabilities, TrackerOpenResult } from '../tracker.js';
import { DiskFile } from '../../io/disk-file.js';
import { compareAndStage } from './full-compare.js';

/**
 * The `scan` driver: every cut is a full compare of an image file or block
 * device against the digest map (docs/replication.md). Nothing sits in the
 * write path, so it works on anything readable; the price is reading the
 * allocated data at every cut, and no point in time unless the user quiesces
 * the disk: the disk is read while changes() is iterated, and each extent
 * shows the bytes as they were read (the staged digests describe exactly
 * those bytes, so a later write is found by the next cut).
 *
 * State in `stateDir`: the digest map and at most one sealed pending cut.
 * open() says `lost` until a first cut was committed (no map), `continuous`
 * after (the next cut compares everything anyway). A cut whose changes were
 * read to the end is staged durably: if the process ends before commit() or
 * abort(), the next open() reports it as `pendingCutId` for settle().
 */

export interface ScanTrackerOptions {
  /** The image file or block device. */
  readonly path: string;
  /** The agent's state directory for this disk (holds the digest map). */
  readonly stateDir: string;
  /** Capture time of cuts (ms since the epoch); default Date.now. */
  readonly clock?: () => number;
  /**
   * The replica is a new, all-zero disk while there is no digest map (first
   * start after enrollment): the first cut then ships only non-zero chunks.
   * Default false: with no map, every chunk is reported, zeros included.
   */
  readonly replicaIsEmpty?: boolean;
  /** Sequential read size of the compare (default 4 MiB). */
  readonly readBytes?: number;
}

const CAPABILITIES: TrackerCapabilities = Object.freeze({ pointInTime: false, exactExtents: false });

export class ScanTracker implements ChangeTracker {
  readonly kind = 'scan' as const;
  readonly capabilities = CAPABILITIES;
  private map: DigestMap | null = null;
  private openCut: ScanCut | null = null;
  private closed = false;
  private readonly clock: () => number;

  constructor(private readonly options: ScanTrackerOptions) {
    this.clock = options.clock ?? Date.now;
  }

  async open(): Promise<TrackerOpenResult> {
    if (this.closed) throw new LifeboatError('INTERNAL', 'scan tracker used after close()');
    this.map ??= await DigestMap.open(this.options.stateDir, { absent: this.options.replicaIsEmpty ? 'zero' : 'unknown' });
    const map = this.map;
    let pending = await map.pending();
    if (pending.length > 1) {
      // cut() drops older staging before it stages, so two pending cuts mean foreign
      // files; aborting them is always safe (their chunks are compared again).
      for (const id of pending) await map.drop(id);
      pending = [];
    }
    const base: TrackerOpenResult = map.exists ? { continuity: 'continuous' } : { continuity: 'lost', reason: 'first start: no digest map yet' };
    return pending[0] === undefined ? base : { ...base, pendingCutId: pending[0] };
  }

  async cut(): Promise<Cut> {
    const map = this.requireOpen();
    if (this.openCut) throw new LifeboatError('CONFLICT', `cut ${this.openCut.id} of ${this.options.path} is still open: commit or abort it first`);
    // A cut still pending from before a restart and not settled is aborted (contract).
    for (const id of await map.pending()) await map.drop(id);
    const source = await DiskFile.open(this.options.path);
    let allocated = 0;
    try {
      for (const e of await source.extents(0, source.sizeBytes)) if (!e.zero) allocated += e.length;
    } catch (err) {
      await source.close();
      throw err;
    }
    const cut = new ScanCut(this, map, source, randomUUID(), this.clock(), allocated, this.options.readBytes);
    this.openCut = cut;
    return cut;
  }

  async settle(cutId: string, outcome: 'commit' | 'abort'): Promise<void> {
    const map = this.requireOpen();
    if (this.openCut?.id === cutId) {
      throw new LifeboatError('INTERNAL', `cut ${cutId} is open in this process: use its commit() or abort()`);
    }
    if (outcome === 'commit') await map.apply(cutId);
    else await map.drop(cutId);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const cut = this.openCut;
    this.openCut = null;
    // A staged cut stays pending (reported by the next open()); an unstaged one is dropped.
    await cut?.release();
    await this.map?.close();
    this.map = null;
  }

  /** @internal */
  ended(cut: ScanCut): void {
    if (this.openCut === cut) this.openCut = null;
  }

  private requireOpen(): DigestMap {
    if (this.closed) throw new LifeboatError('INTERNAL', 'scan tracker used after close()');
    if (!this.map) throw new LifeboatError('INTERNAL', 'scan tracker: open() first');
    return this.map;
  }
}

class ScanCut implements Cut {
  readonly full = true;
  readonly sizeBytes: number;
  private iterated = false;
  private staging: PendingDigests | null = null;
  private sealed = false;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    private readonly tracker: ScanTracker,
    private readonly map: DigestMap,
    private readonly source: DiskFile,
    readonly id: string,
    readonly capturedAtMs: number,
    /** Every allocated byte is read; what is yielded is at most that. */
    readonly estimatedBytes: number,
    private readonly readBytes: number | undefined,
  ) {
    this.sizeBytes = source.sizeBytes;
  }

  changes(): AsyncIterable<ChangedExtent> {
    if (this.iterated) throw new LifeboatError('INTERNAL', `the changes of cut ${this.id} were iterated already`);
    this.iterated = true;
    return this.run();
  }

  private async *run(): AsyncGenerator<ChangedExtent> {
    if (this.state !== 'open') throw new LifeboatError('INTERNAL', `cut ${this.id} is ${this.state}`);
    const staging = await this.map.stage(this.id, this.sizeBytes);
    this.staging = staging;
    try {
      yield* compareAndStage(this.source, this.map, staging, this.readBytes === undefined ? {} : { readBytes: this.readBytes });
      await staging.seal();
      this.sealed = true;
    } catch (err) {
      await staging.discard();
      // The disk could not be read (it vanished or shrank): the tracker's failure, with the reason kept.
      if (err instanceof LifeboatError && err.code === 'SOURCE_UNREADABLE') {
        throw new LifeboatError('TRACKER_FAILED', err.message, { cause: err, details: { ...err.details, cutId: this.id } });
      }
      if (err instanceof LifeboatError) throw err;
      throw new LifeboatError('TRACKER_FAILED', `full compare of ${this.source.path} failed: ${(err as Error).message}`, {
        cause: err,
        details: { path: this.source.path, cutId: this.id },
      });
    } finally {
      if (!this.sealed) await staging.discard();
      await this.source.close();
    }
  }

  async commit(): Promise<void> {
    if (this.state === 'committed') return;
    if (this.state === 'aborted') throw new LifeboatError('INTERNAL', `cut ${this.id} was aborted; it cannot be committed`);
    if (!this.sealed) throw new LifeboatError('INTERNAL', `cut ${this.id} committed before its changes were read to the end`);
    await this.map.apply(this.id);
    this.state = 'committed';
    this.tracker.ended(this);
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    if (this.state === 'committed') throw new LifeboatError('INTERNAL', `cut ${this.id} was committed; it cannot be aborted`);
    this.state = 'aborted';
    await this.staging?.discard();
    await this.map.drop(this.id);
    await this.source.close();
    this.tracker.ended(this);
  }

  /** The process stops with this cut open: keep it if staged (pending), else drop it. */
  async release(): Promise<void> {
    if (!this.sealed) await this.staging?.discard();
    await this.source.close();
  }
}
