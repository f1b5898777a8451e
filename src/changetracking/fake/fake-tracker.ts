import { randomUUID } from 'node:crypto';
import { LifeboatError } from '../../core/errors.js';
import type { ChangedExtent, ChangeTracker, Cut, TrackerCapabilities, TrackerKind, TrackerOpenResult } from '../tracker.js';

/**
 * An in-memory disk with a change tracker over it, for unit tests of the agent
 * (a real module, not a mock: it keeps the contract of src/changetracking/
 * tracker.ts and passes test/changetracking/contract.ts).
 *
 * `FakeDisk` is what survives a restart: the disk's bytes, the tracker's
 * persistent state (what the replica holds, the chunks written since the last
 * committed cut, a staged cut awaiting settle). `disk.tracker()` is a process
 * starting: it returns a new tracker and abandons the previous one as if that
 * process had been killed (an open cut whose changes were read to the end
 * becomes pending, any other open cut is aborted).
 *
 * Cuts are point-in-time (data copied at cut()) and exact (only the chunks
 * written since the last committed cut, or every differing chunk after
 * continuity was lost). Fault switches: failNextCut(), loseContinuity().
 */

const CHUNK = 4096;
const MAX_EXTENT = 16 * 1024 * 1024;

export interface FakeDiskOptions {
  readonly sizeBytes: number;
  /** The tracker's clock (ms since the epoch); defaults to Date.now. */
  readonly clock?: () => number;
  /** The kind the tracker reports (the agent may log it); default 'qemu', whose capabilities the fake has. */
  readonly kind?: TrackerKind;
}

export interface FakeFault {
  /** 'cut': cut() rejects; 'changes': the cut's changes() rejects after yielding its first extent (or at once). */
  readonly during: 'cut' | 'changes';
  readonly error?: Error;
}

interface StagedCut {
  readonly id: string;
  readonly chunks: Set<number>;
  readonly extents: readonly ChangedExtent[];
  readonly full: boolean;
  readonly sizeBytes: number;
}

export class FakeDisk {
  private bytes: Buffer;
  /** What the replica holds: the disk as of the committed cuts. */
  private replica: Buffer;
  /** Chunks written since the last cut (plus those of aborted cuts). */
  private dirty = new Set<number>();
  private lostReason: string | null = 'first start';
  private pending: StagedCut | null = null;
  private faults: FakeFault[] = [];
  private current: FakeTracker | null = null;
  private generation = 0;
  readonly clock: () => number;
  readonly kind: TrackerKind;
  /** Every cut taken, for assertions in agent tests. */
  readonly cuts: { id: string; full: boolean; outcome: 'open' | 'committed' | 'aborted' }[] = [];

  constructor(options: FakeDiskOptions) {
    this.bytes = Buffer.alloc(options.sizeBytes);
    this.replica = Buffer.alloc(options.sizeBytes);
    this.clock = options.clock ?? Date.now;
    this.kind = options.kind ?? 'qemu';
  }

  get sizeBytes(): number {
    return this.bytes.length;
  }

  write(offset: number, data: Buffer): void {
    if (offset < 0 || offset + data.length > this.bytes.length) {
      throw new LifeboatError('INTERNAL', `fake write [${offset}, ${offset + data.length}) outside a ${this.bytes.length}-byte disk`);
    }
    data.copy(this.bytes, offset);
    if (data.length === 0) return;
    for (let c = Math.floor(offset / CHUNK); c * CHUNK < offset + data.length; c++) this.dirty.add(c);
  }

  read(offset: number, length: number): Buffer {
    return Buffer.from(this.bytes.subarray(offset, offset + length));
  }

  /** Grows (zero-filled) or shrinks the disk; the changed tail is reported by the next cut. */
  resize(sizeBytes: number): void {
    const old = this.bytes.length;
    const next = Buffer.alloc(sizeBytes);
    this.bytes.copy(next, 0, 0, Math.min(old, sizeBytes));
    this.bytes = next;
    const replica = Buffer.alloc(sizeBytes);
    this.replica.copy(replica, 0, 0, Math.min(old, sizeBytes));
    this.replica = replica;
    for (let c = Math.floor(Math.min(old, sizeBytes) / CHUNK); c * CHUNK < sizeBytes; c++) this.dirty.add(c);
    this.dirty = new Set([...this.dirty].filter((c) => c * CHUNK < sizeBytes));
  }

  /** The next cut (or its changes()) fails with `error` (default TRACKER_FAILED); its changes stay reported. */
  failNextCut(fault: FakeFault = { during: 'cut' }): void {
    this.faults.push(fault);
  }

  /** The tracker can no longer vouch for every write: the next open() says lost and the next cut is full. */
  loseContinuity(reason = 'continuity lost (fault injected)'): void {
    this.lostReason = reason;
  }

  /** Starts a tracker process over this disk; the previous one, if any, is abandoned as if killed. */
  tracker(): FakeTracker {
    this.current?.kill();
    this.generation++;
    this.current = new FakeTracker(this, this.generation);
    return this.current;
  }

  /** The replica's content as this fake believes it (after the committed cuts). */
  replicaBytes(): Buffer {
    return Buffer.from(this.replica);
  }

  // --- used by FakeTracker ---

  /** @internal */
  isCurrent(generation: number): boolean {
    return this.current !== null && this.generation === generation;
  }

  /** @internal */
  openResult(): TrackerOpenResult {
    const base = this.lostReason === null ? { continuity: 'continuous' as const } : { continuity: 'lost' as const, reason: this.lostReason };
    return this.pending ? { ...base, pendingCutId: this.pending.id } : base;
  }

  /** @internal */
  takeFault(during: FakeFault['during']): Error | null {
    const i = this.faults.findIndex((f) => f.during === during);
    if (i < 0) return null;
    const [fault] = this.faults.splice(i, 1);
    return fault?.error ?? new LifeboatError('TRACKER_FAILED', `fake tracker: injected failure during ${during}`);
  }

  /** @internal Freezes the cut's changes now (point in time). */
  freeze(): StagedCut {
    if (this.pending) this.settle(this.pending.id, 'abort');
    const full = this.lostReason !== null;
    const size = this.bytes.length;
    let chunks: number[];
    if (full) {
      chunks = [];
      for (let c = 0; c * CHUNK < size; c++) {
        const a = this.bytes.subarray(c * CHUNK, Math.min(size, (c + 1) * CHUNK));
        const b = this.replica.subarray(c * CHUNK, Math.min(size, (c + 1) * CHUNK));
        if (!a.equals(b)) chunks.push(c);
      }
      // The compare covered every chunk: the written set is subsumed.
    } else {
      chunks = [...this.dirty].sort((x, y) => x - y);
    }
    const extents: ChangedExtent[] = [];
    let start = -1;
    let end = -1;
    const flush = () => {
      if (start >= 0) extents.push({ offset: start, data: Buffer.from(this.bytes.subarray(start, end)) });
      start = -1;
    };
    for (const c of chunks) {
      const off = c * CHUNK;
      const stop = Math.min(size, off + CHUNK);
      if (start >= 0 && off === end && stop - start <= MAX_EXTENT) {
        end = stop;
      } else {
        flush();
        start = off;
        end = stop;
      }
    }
    flush();
    const set = new Set(full ? [...this.dirty, ...chunks] : chunks);
    this.dirty = new Set();
    return { id: randomUUID(), chunks: set, extents, full, sizeBytes: size };
  }

  /** @internal */
  stage(cut: StagedCut): void {
    this.pending = cut;
  }

  /** @internal */
  settle(cutId: string, outcome: 'commit' | 'abort', cut?: StagedCut): void {
    const staged = cut ?? (this.pending?.id === cutId ? this.pending : null);
    if (!staged) return;
    if (this.pending?.id === cutId) this.pending = null;
    const record = this.cuts.find((c) => c.id === cutId);
    if (outcome === 'commit') {
      for (const e of staged.extents) {
        if (e.offset + e.data.length <= this.replica.length) e.data.copy(this.replica, e.offset);
      }
      if (staged.full) this.lostReason = null;
      if (record) record.outcome = 'committed';
    } else {
      for (const c of staged.chunks) if (c * CHUNK < this.bytes.length) this.dirty.add(c);
      if (record) record.outcome = 'aborted';
    }
  }
}

type CutState = 'open' | 'committed' | 'aborted';

export class FakeTracker implements ChangeTracker {
  readonly kind: TrackerKind;
  readonly capabilities: TrackerCapabilities = { pointInTime: true, exactExtents: true };
  private opened = false;
  private closed = false;
  private killed = false;
  private openCut: FakeCut | null = null;

  constructor(
    private readonly disk: FakeDisk,
    private readonly generation: number,
  ) {
    this.kind = disk.kind;
  }

  async open(): Promise<TrackerOpenResult> {
    this.alive();
    this.opened = true;
    return this.disk.openResult();
  }

  async cut(): Promise<Cut> {
    this.alive();
    if (!this.opened) throw new LifeboatError('INTERNAL', 'fake tracker: cut() before open()');
    if (this.openCut) throw new LifeboatError('CONFLICT', `cut ${this.openCut.id} is still open: commit or abort it first`);
    const fault = this.disk.takeFault('cut');
    if (fault) throw fault;
    const staged = this.disk.freeze();
    const cut = new FakeCut(this, staged, this.disk.clock(), this.disk.takeFault('changes'));
    this.disk.cuts.push({ id: staged.id, full: staged.full, outcome: 'open' });
    this.openCut = cut;
    return cut;
  }

  async settle(cutId: string, outcome: 'commit' | 'abort'): Promise<void> {
    this.alive();
    this.disk.settle(cutId, outcome);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A clean stop keeps an open cut like a kill does: read to the end, it is pending; otherwise aborted.
    this.kill();
  }

  /** @internal The process ended: an open cut read to the end is pending, any other is aborted. */
  kill(): void {
    if (this.killed) return;
    this.killed = true;
    const cut = this.openCut;
    this.openCut = null;
    if (!cut) return;
    if (cut.readToEnd) this.disk.stage(cut.staged);
    else this.disk.settle(cut.id, 'abort', cut.staged);
  }

  /** @internal */
  finish(cut: FakeCut, outcome: 'commit' | 'abort'): void {
    this.alive();
    if (this.openCut !== cut) return;
    this.openCut = null;
    this.disk.settle(cut.id, outcome, cut.staged);
  }

  private alive(): void {
    if (this.closed || this.killed || !this.disk.isCurrent(this.generation)) {
      throw new LifeboatError('INTERNAL', 'fake tracker: used after close() or after another tracker started on the disk');
    }
  }
}

class FakeCut implements Cut {
  readonly id: string;
  readonly sizeBytes: number;
  readonly full: boolean;
  readonly estimatedBytes: number;
  readToEnd = false;
  private iterated = false;
  private state: CutState = 'open';

  constructor(
    private readonly tracker: FakeTracker,
    readonly staged: StagedCut,
    readonly capturedAtMs: number,
    private readonly fault: Error | null,
  ) {
    this.id = staged.id;
    this.sizeBytes = staged.sizeBytes;
    this.full = staged.full;
    this.estimatedBytes = staged.extents.reduce((n, e) => n + e.data.length, 0);
  }

  changes(): AsyncIterable<ChangedExtent> {
    if (this.iterated) throw new LifeboatError('INTERNAL', `the changes of cut ${this.id} were iterated already`);
    this.iterated = true;
    const extents = this.staged.extents;
    const fault = this.fault;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        let i = 0;
        for (const e of extents) {
          if (fault && i === 1) throw fault;
          i++;
          yield { offset: e.offset, data: Buffer.from(e.data) };
        }
        if (fault) throw fault;
        self.readToEnd = true;
      },
    };
  }

  async commit(): Promise<void> {
    if (this.state === 'committed') return;
    if (this.state === 'aborted') throw new LifeboatError('INTERNAL', `cut ${this.id} was aborted; it cannot be committed`);
    if (!this.readToEnd) throw new LifeboatError('INTERNAL', `cut ${this.id} committed before its changes were read to the end`);
    this.state = 'committed';
    this.tracker.finish(this, 'commit');
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    if (this.state === 'committed') throw new LifeboatError('INTERNAL', `cut ${this.id} was committed; it cannot be aborted`);
    this.state = 'aborted';
    this.tracker.finish(this, 'abort');
  }
}
