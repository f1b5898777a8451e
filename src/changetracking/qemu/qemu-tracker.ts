/**
 * The `qemu` change tracker (docs/replication.md, "Change tracking and the
 * digest map"): a dirty bitmap (4 KiB granularity) on a disk node of a running
 * QEMU or qemu-storage-daemon, reached through its QMP socket.
 *
 * - cut(): one QMP transaction freezes the current bitmap, starts the next and
 *   starts a fleecing job, so the view exported over NBD is the disk at that
 *   moment (pointInTime) and the frozen bitmap names exactly what was written
 *   since the last committed cut (exactExtents). The cut's id is the frozen
 *   bitmap's name.
 * - commit(): the staged digests enter the digest map, the view is torn down
 *   and the frozen bitmap removed. abort(): the frozen bitmap is merged into
 *   the current one, so its changes come again.
 * - open(): continuous when the bitmap named in our state file exists,
 *   records and is consistent; otherwise (QEMU restarted with a transient
 *   bitmap, or was killed and left it inconsistent, or first start) whatever
 *   is left is removed, a fresh bitmap is added and the next cut is a full
 *   compare of the view against the digest map.
 * - A cut whose changes were read to the end is staged durably (sealed
 *   digests + the frozen bitmap, persistent on qcow2); after an agent restart
 *   open() reports it as pendingCutId for the agent to settle.
 *
 * Bitmaps are persistent on qcow2 images (they survive a clean QEMU restart)
 * and transient otherwise (raw cannot store them). Files in `stateDir`: the
 * digest map's, and `qemu-tracker.json` (replaced atomically).
 */
import { mkdir, open as openFile, readFile, rename } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import { NbdClient, nbdBlockSource } from '../../nbd/client.js';
import type { NbdStatusExtent } from '../../nbd/client.js';
import { BASE_ALLOCATION, NBD_STATE_ZERO } from '../../nbd/protocol.js';
import { CHUNK_BYTES, DIGEST_BYTES, DigestMap, chunkDigestInto } from '../digest-map.js';
import type { PendingDigests } from '../digest-map.js';
import { compareAndStage } from '../scan/full-compare.js';
import type { CompareSource } from '../scan/full-compare.js';
import type { ChangedExtent, ChangeTracker, Cut, TrackerCapabilities, TrackerOpenResult } from '../tracker.js';
import { QmpClient } from './qmp.js';
import { QemuView, viewNames } from './view.js';
import type { BitmapInfo } from './view.js';

export interface QemuTrackerOptions {
  /** QEMU's QMP socket (absolute path). */
  readonly qmpSocket: string;
  /** The disk's block node name in QEMU (the format node, e.g. the qcow2 node). */
  readonly node: string;
  /** Where the fleecing overlay is created (absolute; QEMU must be able to open it). */
  readonly workDir: string;
  /** The Unix socket of QEMU's NBD server: started there if none runs, else it must listen there. */
  readonly nbdSocket: string;
  /** The tracker's state directory for this disk (digest map + qemu-tracker.json). */
  readonly stateDir: string;
  /** ms since the epoch; default Date.now. */
  readonly clock?: () => number;
  /** Deadline for each QMP command and NBD request. Default 30 s. */
  readonly timeoutMs?: number;
  /**
   * The replica is a new all-zero disk (first start after enrollment): with no
   * digest map yet, zero chunks are not shipped. Default false: every chunk is
   * reported once.
   */
  readonly replicaIsEmpty?: boolean;
  /**
   * The disk's content at the first open is known to the consumer (a machine
   * booted from a recovery point, the tracker opened before the guest ran): the
   * first open's fresh bitmap counts as continuous, so the first cut reports
   * only what was written since, not a full compare. Default false.
   */
  readonly trackedFromStart?: boolean;
}

const STATE_FILE = 'qemu-tracker.json';
const STATE_VERSION = 1;
const BITMAP_PREFIX = 'lifeboat-';
const MAX_EXTENT_BYTES = 16 * 1024 * 1024;
/** Reads kept in flight while changes() yields. */
const READ_DEPTH = 4;
const DIRTY = 1;

interface TrackerState {
  readonly version: number;
  readonly node: string;
  /** Highest bitmap number handed out. */
  readonly epoch: number;
  /** The bitmap recording now. */
  readonly bitmap: string;
  /** Continuity was lost and no full cut has been committed since. */
  readonly needFull: boolean;
  readonly lostReason: string | null;
  /** The cut taken last and not yet committed or aborted. */
  readonly inFlight: { readonly cutId: string; readonly full: boolean } | null;
}

function bitmapName(epoch: number): string {
  return `${BITMAP_PREFIX}${String(epoch).padStart(12, '0')}`;
}

function bitmapEpoch(name: string): number | null {
  const m = /^lifeboat-(\d{12})$/.exec(name);
  return m ? Number(m[1]) : null;
}

function trackerError(message: string, details: Record<string, unknown> = {}, cause?: unknown): LifeboatError {
  return new LifeboatError('TRACKER_FAILED', message, cause === undefined ? { details } : { details, cause });
}

/** Any failure leaves as TRACKER_FAILED (NBD and file errors included), keeping the original as cause. */
function asTrackerError(err: unknown, what: string): LifeboatError {
  if (err instanceof LifeboatError && (err.code === 'TRACKER_FAILED' || err.code === 'CONFLICT' || err.code === 'INTERNAL')) return err;
  return trackerError(`${what}: ${(err as Error)?.message ?? String(err)}`, {}, err);
}

async function writeAtomic(dir: string, name: string, text: string): Promise<void> {
  const tmp = join(dir, `${name}.tmp`);
  const h = await openFile(tmp, 'w', 0o600);
  try {
    await h.writeFile(text);
    await h.sync();
  } finally {
    await h.close();
  }
  await rename(tmp, join(dir, name));
  const d = await openFile(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Validates the options and returns a tracker; nothing is contacted until open(). */
export async function openQemuTracker(options: QemuTrackerOptions): Promise<ChangeTracker> {
  for (const key of ['qmpSocket', 'workDir', 'nbdSocket', 'stateDir'] as const) {
    if (typeof options[key] !== 'string' || !isAbsolute(options[key])) {
      throw new LifeboatError('CONFIG_INVALID', `qemu tracker option ${key} must be an absolute path`, { details: { [key]: options[key] } });
    }
  }
  if (typeof options.node !== 'string' || !/^[A-Za-z][A-Za-z0-9_.-]{0,30}$/.test(options.node)) {
    throw new LifeboatError('CONFIG_INVALID', 'qemu tracker option node must be a QEMU node name', { details: { node: options.node } });
  }
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
  await mkdir(options.workDir, { recursive: true });
  return new QemuTracker(options);
}

class QemuTracker implements ChangeTracker {
  readonly kind = 'qemu' as const;
  readonly capabilities: TrackerCapabilities = Object.freeze({ pointInTime: true, exactExtents: true });
  private qmp: QmpClient | null = null;
  private view: QemuView | null = null;
  private map: DigestMap | null = null;
  private state: TrackerState | null = null;
  private persistent = false;
  private current: QemuCut | null = null;
  private pendingCutId: string | null = null;
  private closed = false;
  private readonly clock: () => number;
  private readonly timeoutMs: number;

  constructor(private readonly options: QemuTrackerOptions) {
    this.clock = options.clock ?? Date.now;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  async open(): Promise<TrackerOpenResult> {
    if (this.closed) throw new LifeboatError('INTERNAL', 'qemu tracker is closed');
    try {
      return await this.doOpen();
    } catch (err) {
      throw asTrackerError(err, `qemu tracker for node ${this.options.node} cannot open`);
    }
  }

  private async doOpen(): Promise<TrackerOpenResult> {
    if (this.qmp?.closed) {
      // The connection died (QEMU restarted?): start over with a new one.
      this.qmp = null;
      this.view = null;
    }
    if (this.qmp === null) {
      this.qmp = await QmpClient.connect({ socketPath: this.options.qmpSocket, timeoutMs: this.timeoutMs });
      this.view = new QemuView(this.qmp, viewNames(this.options.node, this.options.workDir), {
        nbdSocket: this.options.nbdSocket,
        timeoutMs: this.timeoutMs,
      });
    }
    this.map ??= await DigestMap.open(this.options.stateDir, { absent: this.options.replicaIsEmpty === true ? 'zero' : 'unknown' });
    const view = this.view as QemuView;
    const map = this.map;
    // A killed predecessor may have left its view behind.
    await view.closeView();
    await view.ensureNbdServer();
    const info = await view.nodeInfo();
    this.persistent = info.driver === 'qcow2';
    const saved = await this.readState();
    const ours = info.bitmaps.filter((b) => bitmapEpoch(b.name) !== null);
    const epoch = Math.max(saved?.epoch ?? 0, ...ours.map((b) => bitmapEpoch(b.name) as number));

    const lost = this.lostReason(saved, ours);
    if (lost !== null) {
      for (const b of ours) await view.removeBitmap(b.name);
      for (const id of await map.pending()) await map.drop(id);
      const fresh = bitmapName(epoch + 1);
      await view.addBitmap(fresh, this.persistent);
      const fromStart = saved === null && this.options.trackedFromStart === true;
      await this.saveState({
        version: STATE_VERSION,
        node: this.options.node,
        epoch: epoch + 1,
        bitmap: fresh,
        needFull: !fromStart,
        lostReason: fromStart ? null : lost,
        inFlight: null,
      });
      this.pendingCutId = null;
      return fromStart ? { continuity: 'continuous' } : { continuity: 'lost', reason: lost };
    }

    const state = saved as TrackerState;
    // The newest recording bitmap is current; older ones are frozen cuts never committed.
    const current = ours.filter((b) => b.recording).sort((a, b) => b.name.localeCompare(a.name))[0] as BitmapInfo;
    const frozen = ours.filter((b) => b.name !== current.name).map((b) => b.name);
    const sealed = await map.pending();
    const pending = state.inFlight !== null && frozen.includes(state.inFlight.cutId) && sealed.includes(state.inFlight.cutId) ? state.inFlight : null;
    const toMerge = frozen.filter((name) => name !== pending?.cutId);
    await view.merge(current.name, toMerge);
    for (const name of toMerge) await view.removeBitmap(name);
    for (const id of sealed) if (id !== pending?.cutId) await map.drop(id);
    await this.saveState({ ...state, epoch, bitmap: current.name, inFlight: pending });
    this.pendingCutId = pending?.cutId ?? null;
    const result: { continuity: 'continuous' | 'lost'; reason?: string; pendingCutId?: string } = state.needFull
      ? { continuity: 'lost', reason: state.lostReason ?? 'a full compare has not completed yet' }
      : { continuity: 'continuous' };
    if (pending !== null) result.pendingCutId = pending.cutId;
    return result;
  }

  /** Why the bitmaps cannot vouch for every write since the last committed cut, or null when they can. */
  private lostReason(saved: TrackerState | null, ours: readonly BitmapInfo[]): string | null {
    if (saved === null) return 'first start: no tracker state';
    if (saved.node !== this.options.node) return `the state belongs to node ${saved.node}`;
    const bad = ours.find((b) => b.inconsistent);
    if (bad !== undefined) return `dirty bitmap ${bad.name} is inconsistent (QEMU stopped uncleanly)`;
    if (!ours.some((b) => b.name === saved.bitmap)) return `dirty bitmap ${saved.bitmap} is missing (QEMU restarted)`;
    const newest = [...ours].sort((a, b) => b.name.localeCompare(a.name))[0] as BitmapInfo;
    if (!newest.recording) return `dirty bitmap ${newest.name} is not recording`;
    return null;
  }

  async cut(): Promise<Cut> {
    if (this.closed) throw new LifeboatError('INTERNAL', 'qemu tracker is closed');
    if (this.current !== null) throw new LifeboatError('CONFLICT', `cut ${this.current.id} is still open: commit or abort it first`);
    if (this.state === null || this.view === null) throw new LifeboatError('INTERNAL', 'qemu tracker: open() before cut()');
    try {
      if (this.pendingCutId !== null) await this.settle(this.pendingCutId, 'abort');
      const cut = await this.takeCut();
      this.current = cut;
      return cut;
    } catch (err) {
      throw asTrackerError(err, `qemu tracker for node ${this.options.node} cannot cut`);
    }
  }

  private async takeCut(): Promise<QemuCut> {
    const view = this.view as QemuView;
    let state = this.state as TrackerState;
    const info = await view.nodeInfo();
    const now = info.bitmaps.find((b) => b.name === state.bitmap);
    if (now === undefined || !now.recording || now.inconsistent) {
      // QEMU restarted under us: from here on it is a fresh start, compared in full.
      for (const b of info.bitmaps) if (bitmapEpoch(b.name) !== null) await view.removeBitmap(b.name);
      const fresh = bitmapName(state.epoch + 1);
      await view.addBitmap(fresh, this.persistent);
      state = { ...state, epoch: state.epoch + 1, bitmap: fresh, needFull: true, lostReason: `dirty bitmap ${state.bitmap} vanished while running`, inFlight: null };
      await this.saveState(state);
    }
    const frozen = state.bitmap;
    const next = bitmapName(state.epoch + 1);
    const full = state.needFull;
    const sizeBytes = info.sizeBytes;
    let client: NbdClient | null = null;
    let staging: PendingDigests | null = null;
    try {
      await view.openView(frozen, next, this.persistent, sizeBytes);
      const capturedAtMs = this.clock();
      // From here a restart finds `next` recording and `frozen` frozen: it merges them, or reports the cut pending.
      await this.saveState({ ...state, epoch: state.epoch + 1, bitmap: next, inFlight: { cutId: frozen, full } });
      await view.exportView(frozen);
      client = await NbdClient.connect({
        target: { socketPath: this.options.nbdSocket },
        exportName: view.names.exportName,
        metaContexts: [`qemu:dirty-bitmap:${frozen}`, BASE_ALLOCATION],
        timeoutMs: this.timeoutMs,
      });
      staging = await (this.map as DigestMap).stage(frozen, sizeBytes);
      if (full) {
        const allocation = await client.extents(BASE_ALLOCATION, 0, sizeBytes);
        const estimated = allocation.filter((e) => !(e.flags & NBD_STATE_ZERO)).reduce((n, e) => n + e.length, 0);
        return new QemuCut(this, frozen, sizeBytes, capturedAtMs, true, estimated, client, staging, allocation);
      }
      const dirty = (await client.extents(`qemu:dirty-bitmap:${frozen}`, 0, sizeBytes)).filter((e) => e.flags & DIRTY);
      const estimated = dirty.reduce((n, e) => n + e.length, 0);
      return new QemuCut(this, frozen, sizeBytes, capturedAtMs, false, estimated, client, staging, dirty);
    } catch (err) {
      await staging?.discard().catch(() => undefined);
      await client?.close().catch(() => undefined);
      await this.undoCut(frozen).catch(() => undefined);
      throw err;
    }
  }

  /** commit() of the open cut: digests into the map, view gone, frozen bitmap gone. */
  async commitCut(cut: QemuCut): Promise<void> {
    const view = this.view as QemuView;
    await (this.map as DigestMap).apply(cut.id);
    await cut.client.close();
    await view.closeView();
    await view.removeBitmap(cut.id);
    const state = this.state as TrackerState;
    await this.saveState({ ...state, needFull: cut.full ? false : state.needFull, lostReason: cut.full ? null : state.lostReason, inFlight: null });
    this.current = null;
  }

  /** abort() of the open cut: staged digests dropped, view gone, frozen bitmap merged back. */
  async abortCut(cut: QemuCut): Promise<void> {
    await cut.staging.discard();
    await cut.client.close();
    await this.undoCut(cut.id);
    this.current = null;
  }

  private async undoCut(frozen: string): Promise<void> {
    const view = this.view as QemuView;
    const state = this.state as TrackerState;
    await (this.map as DigestMap).drop(frozen);
    await view.closeView();
    const info = await view.nodeInfo();
    if (info.bitmaps.some((b) => b.name === frozen)) {
      if (frozen !== state.bitmap) await view.merge(state.bitmap, [frozen]);
      // When the transaction never ran, `frozen` is still the recording bitmap: keep it.
      if (frozen !== state.bitmap) await view.removeBitmap(frozen);
    }
    await this.saveState({ ...state, inFlight: null });
  }

  async settle(cutId: string, outcome: 'commit' | 'abort'): Promise<void> {
    if (this.pendingCutId !== cutId) return;
    try {
      const view = this.view as QemuView;
      const state = this.state as TrackerState;
      const wasFull = state.inFlight?.full ?? false;
      if (outcome === 'commit') {
        await (this.map as DigestMap).apply(cutId);
        await view.removeBitmap(cutId);
        await this.saveState({ ...state, needFull: wasFull ? false : state.needFull, lostReason: wasFull ? null : state.lostReason, inFlight: null });
      } else {
        await (this.map as DigestMap).drop(cutId);
        await view.merge(state.bitmap, [cutId]);
        await view.removeBitmap(cutId);
        await this.saveState({ ...state, inFlight: null });
      }
      this.pendingCutId = null;
    } catch (err) {
      throw asTrackerError(err, `qemu tracker cannot settle cut ${cutId}`);
    }
  }

  /** Releases the QMP connection, the view's NBD connection and the digest map; QEMU keeps its bitmaps. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.current?.client.close().catch(() => undefined);
    await this.qmp?.close().catch(() => undefined);
    await this.map?.close().catch(() => undefined);
  }

  get digestMap(): DigestMap {
    return this.map as DigestMap;
  }

  private async readState(): Promise<TrackerState | null> {
    let text: string;
    try {
      text = await readFile(join(this.options.stateDir, STATE_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    const state = JSON.parse(text) as TrackerState;
    if (state.version !== STATE_VERSION) {
      throw trackerError(`${STATE_FILE} has version ${state.version}; this Lifeboat reads ${STATE_VERSION}`, { stateDir: this.options.stateDir });
    }
    return state;
  }

  private async saveState(state: TrackerState): Promise<void> {
    await writeAtomic(this.options.stateDir, STATE_FILE, `${JSON.stringify(state)}\n`);
    this.state = state;
  }
}

class QemuCut implements Cut {
  private iterated = false;
  private drained = false;
  private outcome: 'committed' | 'aborted' | null = null;
  private settling: Promise<void> | null = null;

  constructor(
    private readonly tracker: QemuTracker,
    readonly id: string,
    readonly sizeBytes: number,
    readonly capturedAtMs: number,
    readonly full: boolean,
    readonly estimatedBytes: number,
    readonly client: NbdClient,
    readonly staging: PendingDigests,
    /** Dirty extents (incremental; unused by a full cut). */
    private readonly extents: readonly NbdStatusExtent[],
  ) {}

  changes(): AsyncIterable<ChangedExtent> {
    if (this.iterated) throw new LifeboatError('INTERNAL', `changes() of cut ${this.id} may be iterated once`);
    this.iterated = true;
    return this.drain(this.full ? this.compareAll() : this.readDirty());
  }

  /** Full: the shared full compare over the view, holes (base:allocation) not read. */
  private compareAll(): AsyncGenerator<ChangedExtent> {
    const view = nbdBlockSource(this.client);
    const source: CompareSource = { sizeBytes: this.sizeBytes, read: view.read, extents: view.extents };
    return compareAndStage(source, this.tracker.digestMap, this.staging, { pool: null });
  }

  /** Passes the extents through; at the end the staged digests are sealed and the cut may commit. */
  private async *drain(source: AsyncGenerator<ChangedExtent>): AsyncGenerator<ChangedExtent> {
    try {
      for await (const extent of source) yield extent;
      await this.staging.seal();
      this.drained = true;
    } catch (err) {
      throw asTrackerError(err, `cut ${this.id} cannot read its changes`);
    }
  }

  commit(): Promise<void> {
    if (this.outcome === 'committed') return Promise.resolve();
    if (this.outcome === 'aborted') return Promise.reject(new LifeboatError('INTERNAL', `cut ${this.id} was aborted; it cannot be committed`));
    if (!this.drained) return Promise.reject(new LifeboatError('INTERNAL', `cut ${this.id} is committed before its changes were read to the end`));
    this.settling ??= this.tracker.commitCut(this).then(
      () => void (this.outcome = 'committed'),
      (err) => {
        this.settling = null;
        throw asTrackerError(err, `cut ${this.id} cannot commit`);
      },
    );
    return this.settling;
  }

  abort(): Promise<void> {
    if (this.outcome !== null) return Promise.resolve();
    this.settling ??= this.tracker.abortCut(this).then(
      () => void (this.outcome = 'aborted'),
      (err) => {
        this.settling = null;
        throw asTrackerError(err, `cut ${this.id} cannot abort`);
      },
    );
    return this.settling;
  }

  /** Incremental: the dirty ranges, merged and split at 16 MiB, read from the view with reads in flight. */
  private async *readDirty(): AsyncGenerator<ChangedExtent> {
    const runs: Array<{ offset: number; length: number }> = [];
    for (const e of this.extents) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last.offset + last.length === e.offset && last.length + e.length <= MAX_EXTENT_BYTES) {
        last.length += e.length;
        continue;
      }
      for (let at = 0; at < e.length; at += MAX_EXTENT_BYTES) runs.push({ offset: e.offset + at, length: Math.min(MAX_EXTENT_BYTES, e.length - at) });
    }
    for await (const { run, data } of this.pipelined(runs)) {
      await this.stage(run.offset, data);
      yield { offset: run.offset, data };
    }
  }

  private async stage(offset: number, data: Buffer): Promise<void> {
    await this.staging.add(offset / CHUNK_BYTES, digestsOf(data));
  }

  /** Reads the runs in order with up to READ_DEPTH requests in flight. */
  private async *pipelined<T extends { offset: number; length: number }>(runs: readonly T[]): AsyncGenerator<{ run: T; data: Buffer }> {
    const inFlight: Array<Promise<Buffer>> = [];
    let next = 0;
    const fill = (): void => {
      while (next < runs.length && inFlight.length < READ_DEPTH) {
        const run = runs[next++] as T;
        const p = this.client.read(run.offset, run.length);
        p.catch(() => undefined); // awaited below, in order
        inFlight.push(p);
      }
    };
    fill();
    for (const run of runs) {
      const data = await (inFlight.shift() as Promise<Buffer>);
      fill();
      yield { run, data };
    }
  }
}

function digestsOf(data: Buffer): Buffer {
  const count = Math.ceil(data.length / CHUNK_BYTES);
  const out = Buffer.allocUnsafe(count * DIGEST_BYTES);
  for (let i = 0; i < count; i++) chunkDigestInto(data.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES), out, i * DIGEST_BYTES);
  return out;
}
