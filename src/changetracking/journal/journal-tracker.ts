import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Extent } from '../../core/block-source.js';
import { LifeboatError } from '../../core/errors.js';
import type { WritableBlockTarget } from '../../nbd/writable-target.js';
import { DIGEST_BYTES, DigestMap, chunkDigestInto } from '../digest-map.js';
import type { PendingDigests } from '../digest-map.js';
import type { ChangedExtent, ChangeTracker, Cut, TrackerCapabilities, TrackerOpenResult } from '../tracker.js';
import { DiskFile } from '../../io/disk-file.js';
import { fsyncDir, writeFileDurable } from '../../io/durable.js';
import { fullCompare } from '../scan/full-compare.js';
import { ChangeLog, scanLog, writeAllAt } from './change-log.js';
import type { ScannedRecord } from './change-log.js';
import { CHUNK_BYTES, LOC_SNAPSHOT, LOC_ZERO, snapshotChunks } from './chunk-index.js';
import { RecordType, normaliseBootId, parseLogFileName } from './log-format.js';
import { Snapshot } from './snapshot.js';

/**
 * The `journal` change tracker (docs/replication.md, "Change tracking"; the log
 * format and the recovery rules are in log-format.ts and docs/nbd.md, "Journal
 * change log"). The agent serves the protected image through `target` (a
 * WritableBlockTarget, exported over NBD by openJournalTracker) and every write
 * is appended to the active change log before it is applied to the image.
 *
 * - cut() closes the gate for new writes, waits for the writes in flight to be
 *   applied, starts a new log and opens the gate again: the logs before it hold
 *   exactly the writes before the cut. Their data is read from the logs (never
 *   from the image, where later writes land); chunks only partly written are read
 *   from the image through a copy-on-write snapshot taken at the same moment.
 * - commit() writes the cut's digests into the digest map, then deletes its logs.
 *   abort() keeps them: the next cut merges them with newer logs (newer wins).
 * - flush (and FUA) fsyncs every log with unsynced records, then the image,
 *   before the NBD reply.
 * - After continuity is lost (first start, unclean reboot, damaged log, image
 *   changed while stopped) the next cut is a full compare of the image (through
 *   the snapshot, so it is point-in-time too) against the digest map.
 *
 * State in `stateDir`: `journal.json` (atomic replace), `logs/*.hrl`,
 * `digests/` (the digest map). One process at a time uses a state directory.
 */

export interface JournalTrackerOptions {
  /** The protected disk: an image file (or block device) of fixed size. */
  readonly imagePath: string;
  /** The tracker's own directory (created if missing). */
  readonly stateDir: string;
  /** ms since the epoch; default Date.now. */
  readonly clock?: () => number;
  /** The machine's boot id; default /proc/sys/kernel/random/boot_id. */
  readonly bootId?: () => Promise<string>;
  /**
   * The replica is a new, all-zero disk (first start after enrollment): with no
   * digest map yet, zero chunks are not shipped. Default false: every chunk is
   * reported once (src/changetracking/registry.ts, TrackerDeps).
   */
  readonly replicaIsEmpty?: boolean;
}

const STATE_VERSION = 1;
const STATE_FILE = 'journal.json';
/** Extents yielded by changes() are at most this long (the contract allows 16 MiB). */
const MAX_EXTENT_BYTES = 4 * 1024 * 1024;
const MAX_EXTENT_CHUNKS = MAX_EXTENT_BYTES / CHUNK_BYTES;
/** Merged index locations: log ordinal × LOG_SPAN + position inside that log. */
const LOG_SPAN = 2 ** 40;
const ZERO_SLICE = Buffer.alloc(1024 * 1024);

interface StateFile {
  readonly version: number;
  /** A full compare is owed (why), until a full cut is committed. */
  readonly needsFull: string | null;
  /** The boot the tracker was last opened in (its unsynced writes live in that boot's page cache). */
  readonly bootId: string;
  /** Set by a clean close (everything synced); cleared by open(). */
  readonly cleanClose: { readonly sizeBytes: number; readonly mtimeMs: number; readonly ino: number } | null;
}

function trackerError(message: string, err: unknown, details: Record<string, unknown> = {}): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return new LifeboatError('TRACKER_FAILED', code === undefined ? message : `${message}: ${code}`, { cause: err, details });
}

async function defaultBootId(): Promise<string> {
  return readFile('/proc/sys/kernel/random/boot_id', 'utf8');
}

/** Cut ids: `f` (full) or `i` (incremental), the last log number the cut covers, a random tag. */
function makeCutId(full: boolean, lastLog: number): string {
  return `${full ? 'f' : 'i'}${lastLog.toString(16).padStart(16, '0')}-${randomBytes(4).toString('hex')}`;
}

function parseCutId(id: string): { full: boolean; lastLog: number } | null {
  const m = /^([fi])([0-9a-f]{16})-[0-9a-f]{8}$/.exec(id);
  if (m === null || m[2] === undefined) return null;
  return { full: m[1] === 'f', lastLog: Number.parseInt(m[2], 16) };
}

export class JournalTracker implements ChangeTracker {
  readonly kind = 'journal' as const;
  readonly capabilities: TrackerCapabilities = Object.freeze({ pointInTime: true, exactExtents: true });
  /** The protected disk as the NBD server sees it: every write goes through the log. */
  readonly target: WritableBlockTarget;

  private readonly clock: () => number;
  private readonly logsDir: string;
  private image: FileHandle | null = null;
  private size = 0;
  private map: DigestMap | null = null;
  private bootId = '';
  /** Uncommitted logs in number order; the last is the active one. */
  private logs: ChangeLog[] = [];
  private needsFull: string | null = null;
  /** A lost-continuity reason found at open() that a pending full cut from before cannot cure. */
  private lostAtOpen: string | null = null;
  private pendingCutId: string | null = null;
  private openResult: TrackerOpenResult | null = null;
  private opening: Promise<TrackerOpenResult> | null = null;
  private openCut: JournalCut | null = null;
  /** cut() is between its checks and setting openCut. */
  private cutting = false;
  private snapshot: Snapshot | null = null;
  /** While set, new writes wait (a cut is rotating the log). */
  private gate: Promise<void> | null = null;
  private inflight = 0;
  private drained: (() => void) | null = null;
  /** Image writes in flight, so that overlapping ones reach the image in log order. */
  private readonly imageWrites = new Set<{ start: number; end: number; done: Promise<void> }>();
  /** A write reached the log but not the image: the log no longer describes the image. */
  private failure: unknown = null;
  private closed = false;

  constructor(private readonly options: JournalTrackerOptions) {
    this.clock = options.clock ?? Date.now;
    this.logsDir = join(options.stateDir, 'logs');
    const sizeOf = (): number => this.size;
    this.target = {
      writable: true,
      get sizeBytes() {
        return sizeOf();
      },
      read: (offset, length) => this.readImage(offset, length),
      extents: async (offset, length): Promise<Extent[]> => [{ offset, length, zero: false }],
      write: (offset, data, fua) => this.applyWrite(RecordType.WRITE, offset, data.length, data, fua),
      writeZeroes: (offset, length, fua) => this.applyWrite(RecordType.ZERO, offset, length, null, fua),
      // Trim is advisory: the data stays, nothing is logged.
      flush: () => this.flush(),
      close: async () => {},
    };
  }

  get sizeBytes(): number {
    return this.size;
  }

  /**
   * Recovers the state (replays the logs, redoes the active log's records into
   * the image after a process kill) and says whether every write since the last
   * committed cut is accounted for. Idempotent: later calls return the first
   * result. Writes are accepted only after it resolved.
   */
  open(): Promise<TrackerOpenResult> {
    this.opening ??= this.recover().catch(async (err: unknown) => {
      await this.kill();
      throw err;
    });
    return this.opening;
  }

  private async recover(): Promise<TrackerOpenResult> {
    const { stateDir, imagePath } = this.options;
    try {
      await mkdir(this.logsDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw trackerError('cannot create the journal state directory', err, { stateDir });
    }
    this.bootId = normaliseBootId(await (this.options.bootId ?? defaultBootId)());
    const state = await this.readState();
    try {
      this.image = await open(imagePath, 'r+');
    } catch (err) {
      throw trackerError('cannot open the protected image', err, { imagePath });
    }
    const stat = await this.image.stat();
    this.size = stat.size;
    this.map = await DigestMap.open(join(stateDir, 'digests'), { absent: this.options.replicaIsEmpty === true ? 'zero' : 'unknown' });

    const reasons: string[] = [];
    const clean = state?.cleanClose ?? null;
    if (state !== null && clean !== null && (clean.sizeBytes !== stat.size || clean.mtimeMs !== stat.mtimeMs || clean.ino !== stat.ino)) {
      reasons.push('the image changed while the tracker was stopped');
    }
    if (state !== null && clean === null && state.bootId !== this.bootId) reasons.push('unclean reboot (the boot id changed)');
    if (this.map.exists && this.map.sizeBytes !== this.size) reasons.push('the disk size changed');

    const numbers = (await readdir(this.logsDir))
      .map((name) => parseLogFileName(name))
      .filter((n): n is number => n !== null)
      .sort((a, b) => a - b);
    const lastNumber = numbers.at(-1);
    let activeRecords: ScannedRecord[] = [];
    let damaged = false;
    for (const number of numbers) {
      const isLast = number === lastNumber;
      const records: ScannedRecord[] = [];
      const path = join(this.logsDir, `${number.toString(16).padStart(16, '0')}.hrl`);
      const scan = await scanLog(path, this.size, isLast ? (r) => records.push(r) : undefined);
      if (scan.header.number === -1 && scan.torn && isLast) {
        // Created just before a kill, header cut short: it never held a record.
        await scan.fh.close();
        await rm(path, { force: true });
        continue;
      }
      const log = ChangeLog.adopt(scan, this.size);
      this.logs.push(log);
      if (scan.damage !== null) {
        reasons.push(`change log ${number} is damaged: ${scan.damage}`);
        damaged = true;
      } else if (scan.header.number !== number) {
        reasons.push(`change log ${number} names itself ${scan.header.number}`);
        damaged = true;
      } else if (scan.header.imageSizeBytes !== this.size) {
        reasons.push('the disk size changed');
      } else if (scan.torn && (!isLast || clean !== null)) {
        reasons.push(`change log ${number} ends inside a record where no process was killed`);
        damaged = true;
      } else if (scan.torn) {
        await log.truncateTo(scan.end);
      }
      if (isLast) activeRecords = records;
    }

    // After a process kill the active log may hold whole records whose image
    // write never happened (the kill came between the two). Redo them so the
    // image and the log agree; none of them was acknowledged, and NBD lets an
    // unacknowledged write either happen or not. Older logs were applied before
    // they were rotated. After an unclean reboot the log is not trusted at all.
    const active = this.logs.at(-1);
    if (state !== null && clean === null && reasons.length === 0 && !damaged && active !== undefined) {
      for (const r of activeRecords) {
        if (r.type === RecordType.WRITE) await writeAllAt(this.image, await active.read(r.position + 32, r.length), r.offset);
        else await this.zeroImage(r.offset, r.length);
      }
    }

    const inherited = state === null ? 'first start' : state.needsFull;
    this.lostAtOpen = reasons[0] ?? null;
    this.needsFull = this.lostAtOpen ?? inherited;

    const pending = await this.map.pending();
    for (const id of pending) {
      if (id === pending.at(-1) && parseCutId(id) !== null) this.pendingCutId = id;
      else await this.map.drop(id);
    }

    const next = (this.logs.at(-1)?.number ?? numbers.at(-1) ?? 0) + 1;
    this.logs.push(await ChangeLog.create(this.logsDir, { number: next, imageSizeBytes: this.size, bootId: this.bootId, createdAtMs: this.clock() }));
    await fsyncDir(this.logsDir);
    await this.writeState(null);

    const result: TrackerOpenResult = {
      ...(this.needsFull === null ? { continuity: 'continuous' as const } : { continuity: 'lost' as const, reason: this.needsFull }),
      ...(this.pendingCutId === null ? {} : { pendingCutId: this.pendingCutId }),
    };
    this.openResult = result;
    return result;
  }

  private async readState(): Promise<StateFile | null> {
    let text: string;
    try {
      text = await readFile(join(this.options.stateDir, STATE_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw trackerError('cannot read the journal state', err);
    }
    let state: StateFile;
    try {
      state = JSON.parse(text) as StateFile;
    } catch (err) {
      throw trackerError('the journal state is not JSON', err);
    }
    if (state.version !== STATE_VERSION) {
      throw new LifeboatError('TRACKER_FAILED', `the journal state has version ${String(state.version)}; this program reads ${STATE_VERSION}`);
    }
    return state;
  }

  private async writeState(cleanClose: StateFile['cleanClose']): Promise<void> {
    const state: StateFile = { version: STATE_VERSION, needsFull: this.needsFull, bootId: this.bootId, cleanClose };
    const dir = this.options.stateDir;
    try {
      await writeFileDurable(dir, STATE_FILE, `${JSON.stringify(state)}\n`);
    } catch (err) {
      throw trackerError('cannot write the journal state', err, { dir });
    }
  }

  private ready(): { image: FileHandle; map: DigestMap } {
    if (this.closed) throw new LifeboatError('TRACKER_FAILED', 'the journal tracker is closed');
    if (this.openResult === null || this.image === null || this.map === null) {
      throw new LifeboatError('INTERNAL', 'the journal tracker is used before open() resolved');
    }
    return { image: this.image, map: this.map };
  }

  private async readImage(offset: number, length: number): Promise<Buffer> {
    const { image } = this.ready();
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await image.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new LifeboatError('SOURCE_UNREADABLE', 'short read from the protected image', { details: { offset, length } });
      done += bytesRead;
    }
    return buf;
  }

  private async zeroImage(offset: number, length: number): Promise<void> {
    const image = this.image;
    if (image === null) throw new LifeboatError('INTERNAL', 'no image');
    for (let at = 0; at < length; at += ZERO_SLICE.length) {
      await writeAllAt(image, ZERO_SLICE.subarray(0, Math.min(ZERO_SLICE.length, length - at)), offset + at);
    }
  }

  /** One write: log, then (in log order for overlapping ranges) snapshot copy and image. */
  private async applyWrite(type: RecordType, offset: number, length: number, data: Buffer | null, fua: boolean): Promise<void> {
    while (this.gate !== null) await this.gate;
    const { image } = this.ready();
    if (this.failure !== null) throw trackerError('an earlier write failed; the journal refuses writes', this.failure);
    if (!Number.isSafeInteger(offset) || offset < 0 || length <= 0 || offset + length > this.size) {
      throw new LifeboatError('SIZE_MISMATCH', 'write outside the disk', { details: { offset, length, sizeBytes: this.size } });
    }
    this.inflight++;
    let release: () => void = () => {};
    const done = new Promise<void>((resolve) => (release = resolve));
    const entry = { start: offset, end: offset + length, done };
    let earlier: Promise<void>[] = [];
    try {
      const log = this.logs.at(-1);
      if (log === undefined) throw new LifeboatError('INTERNAL', 'no active change log');
      await log.append(type, offset, length, data, fua, () => {
        for (const w of this.imageWrites) if (w.start < entry.end && entry.start < w.end) earlier.push(w.done);
        this.imageWrites.add(entry);
      });
      try {
        await Promise.all(earlier);
        earlier = [];
        await this.snapshot?.beforeWrite(offset, length);
        if (data !== null) await writeAllAt(image, data, offset);
        else await this.zeroImage(offset, length);
      } catch (err) {
        // Logged but not applied: from here on the log says more than the image holds.
        this.failure = err;
        this.needsFull = 'a write reached the change log but not the image';
        throw trackerError('cannot write to the protected image', err, { offset, length });
      } finally {
        this.imageWrites.delete(entry);
        release();
      }
      if (fua) await this.flush();
    } finally {
      this.inflight--;
      if (this.inflight === 0) this.drained?.();
    }
  }

  /** Every log with unsynced records first, then the image. */
  async flush(): Promise<void> {
    const { image } = this.ready();
    for (const log of [...this.logs]) await log.sync();
    try {
      await image.datasync();
    } catch (err) {
      throw trackerError('cannot sync the protected image', err);
    }
  }

  /**
   * Starts a new active log with no write in flight, runs `install` (which must
   * not await) while writes still wait, and returns the logs before the new one.
   */
  private async rotate(install: (logs: ChangeLog[]) => void): Promise<ChangeLog[]> {
    let reopen: () => void = () => {};
    this.gate = new Promise<void>((resolve) => (reopen = resolve));
    try {
      while (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      this.drained = null;
      const last = this.logs.at(-1);
      const number = (last?.number ?? 0) + 1;
      const next = await ChangeLog.create(this.logsDir, { number, imageSizeBytes: this.size, bootId: this.bootId, createdAtMs: this.clock() });
      const cutLogs = [...this.logs];
      this.logs.push(next);
      install(cutLogs);
      return cutLogs;
    } finally {
      this.gate = null;
      reopen();
    }
  }

  async cut(): Promise<Cut> {
    const { image, map } = this.ready();
    if (this.openCut !== null) throw new LifeboatError('CONFLICT', `cut ${this.openCut.id} is still open: commit or abort it first`);
    if (this.cutting) throw new LifeboatError('CONFLICT', 'another cut is being taken');
    if (this.failure !== null) throw trackerError('an earlier write failed; the journal needs a restart', this.failure);
    this.cutting = true;
    try {
      return await this.takeCut(image, map);
    } finally {
      this.cutting = false;
    }
  }

  private async takeCut(image: FileHandle, map: DigestMap): Promise<Cut> {
    if (this.pendingCutId !== null) await this.settle(this.pendingCutId, 'abort');
    const full = this.needsFull !== null;
    let merged: Map<number, number> = new Map();
    let snapshot!: Snapshot;
    let capturedAtMs = 0;
    const logs = await this.rotate((cutLogs) => {
      capturedAtMs = this.clock();
      if (full) {
        snapshot = new Snapshot(image, this.size, 'all');
      } else {
        if (cutLogs.length >= 8192) throw new LifeboatError('TRACKER_FAILED', 'too many uncommitted change logs for one cut');
        merged = new Map();
        cutLogs.forEach((log, ordinal) => {
          for (const [c, pos] of log.index) merged.set(c, pos < 0 ? pos : ordinal * LOG_SPAN + pos);
        });
        snapshot = new Snapshot(image, this.size, snapshotChunks(merged));
      }
      this.snapshot = snapshot;
    });
    const lastLog = logs.at(-1)?.number ?? 0;
    const cut = new JournalCut(this, makeCutId(full, lastLog), {
      imagePath: this.options.imagePath,
      full,
      sizeBytes: this.size,
      capturedAtMs,
      logs,
      merged,
      snapshot,
      map,
    });
    this.openCut = cut;
    return cut;
  }

  /** @internal A cut is done with its snapshot. */
  releaseSnapshot(snapshot: Snapshot): void {
    snapshot.release();
    if (this.snapshot === snapshot) this.snapshot = null;
  }

  /** @internal Commit of an open cut: digests in, logs out, full compare owed no more. */
  async finishCut(cut: JournalCut, outcome: 'commit' | 'abort'): Promise<void> {
    const { map } = this.ready();
    if (this.openCut === cut) this.openCut = null;
    if (outcome === 'commit') await this.commitCut(cut.id, map, true);
    else await map.drop(cut.id);
  }

  /**
   * `coversOpen`: the cut was taken by this process, after open(); a full one
   * then also covers whatever made open() lose continuity. A pending full cut
   * settled after a restart does not.
   */
  private async commitCut(id: string, map: DigestMap, coversOpen: boolean): Promise<void> {
    const parsed = parseCutId(id);
    if (parsed === null) return;
    await map.apply(id);
    const gone = this.logs.filter((log) => log.number <= parsed.lastLog && log !== this.logs.at(-1));
    this.logs = this.logs.filter((log) => !gone.includes(log));
    for (const log of gone) await log.remove();
    await fsyncDir(this.logsDir);
    if (parsed.full && this.failure === null) {
      if (coversOpen) this.lostAtOpen = null;
      this.needsFull = this.lostAtOpen;
      await this.writeState(null);
    }
  }

  async settle(cutId: string, outcome: 'commit' | 'abort'): Promise<void> {
    const { map } = this.ready();
    if (cutId !== this.pendingCutId) return;
    this.pendingCutId = null;
    if (outcome === 'commit') await this.commitCut(cutId, map, false);
    else await map.drop(cutId);
  }

  /**
   * Syncs every log and the image, records a clean close (so that a reboot
   * after it keeps continuity) and releases everything. An open cut stays as
   * it is: pending next time if its changes were read to the end, else aborted.
   * The NBD server must be closed first. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.openResult === null || this.image === null) {
      await this.kill();
      return;
    }
    while (this.gate !== null) await this.gate;
    while (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    try {
      await this.flush();
      await fsyncDir(this.logsDir);
      const stat = await this.image.stat();
      await this.writeState(this.failure === null ? { sizeBytes: stat.size, mtimeMs: stat.mtimeMs, ino: stat.ino } : null);
    } finally {
      await this.kill();
    }
  }

  /**
   * @internal Lets go of every file without syncing or recording anything, as a
   * killed process would (tests use it to simulate a kill in one process).
   */
  async kill(): Promise<void> {
    this.closed = true;
    this.snapshot?.release();
    for (const log of this.logs) await log.close();
    await this.image?.close().catch(() => undefined);
    await this.map?.close().catch(() => undefined);
  }

  /** @internal */
  logOf(cutLogs: readonly ChangeLog[], ordinal: number): ChangeLog {
    const log = cutLogs[ordinal];
    if (log === undefined) throw new LifeboatError('INTERNAL', 'merged index names a log outside the cut');
    return log;
  }
}

interface CutParts {
  readonly imagePath: string;
  readonly full: boolean;
  readonly sizeBytes: number;
  readonly capturedAtMs: number;
  readonly logs: readonly ChangeLog[];
  readonly merged: Map<number, number>;
  readonly snapshot: Snapshot;
  readonly map: DigestMap;
}

class JournalCut implements Cut {
  readonly full: boolean;
  readonly sizeBytes: number;
  readonly capturedAtMs: number;
  readonly estimatedBytes: number;
  private iterated = false;
  private sealed = false;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private staging: PendingDigests | null = null;

  constructor(
    private readonly tracker: JournalTracker,
    readonly id: string,
    private readonly parts: CutParts,
  ) {
    this.full = parts.full;
    this.sizeBytes = parts.sizeBytes;
    this.capturedAtMs = parts.capturedAtMs;
    this.estimatedBytes = parts.full ? parts.sizeBytes : parts.merged.size * CHUNK_BYTES;
  }

  changes(): AsyncIterable<ChangedExtent> {
    if (this.iterated) throw new LifeboatError('INTERNAL', `the changes of cut ${this.id} were iterated already`);
    this.iterated = true;
    return { [Symbol.asyncIterator]: () => this.generate()[Symbol.asyncIterator]() };
  }

  private async *generate(): AsyncGenerator<ChangedExtent> {
    const { map, sizeBytes, snapshot } = this.parts;
    this.staging = await map.stage(this.id, sizeBytes);
    try {
      const source: AsyncIterable<ChangedExtent & { digests?: Buffer }> = this.full ? this.compare() : this.fromLogs();
      for await (const extent of source) {
        if (this.state !== 'open') throw new LifeboatError('INTERNAL', `cut ${this.id} was settled while its changes were read`);
        const first = extent.offset / CHUNK_BYTES;
        let digests = extent.digests;
        if (digests === undefined) {
          const count = Math.ceil(extent.data.length / CHUNK_BYTES);
          digests = Buffer.allocUnsafe(count * DIGEST_BYTES);
          for (let i = 0; i < count; i++) {
            chunkDigestInto(extent.data.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES), digests, i * DIGEST_BYTES);
          }
        }
        await this.staging.add(first, digests);
        yield { offset: extent.offset, data: extent.data };
      }
      this.tracker.releaseSnapshot(snapshot);
      if (this.state !== 'open') throw new LifeboatError('INTERNAL', `cut ${this.id} was settled while its changes were read`);
      await this.staging.seal();
      this.sealed = true;
    } catch (err) {
      await this.staging.discard().catch(() => undefined);
      throw err;
    }
  }

  /** Incremental: the merged index in chunk order, data from the logs or the snapshot. */
  private async *fromLogs(): AsyncGenerator<ChangedExtent> {
    const { merged, logs, snapshot, sizeBytes } = this.parts;
    const chunks = [...merged.keys()].sort((a, b) => a - b);
    let i = 0;
    while (i < chunks.length) {
      const first = chunks[i] as number;
      let n = 1;
      while (n < MAX_EXTENT_CHUNKS && chunks[i + n] === first + n) n++;
      const start = first * CHUNK_BYTES;
      const data = Buffer.alloc(Math.min(sizeBytes, (first + n) * CHUNK_BYTES) - start);
      // Runs of chunks with the same kind of source (and, for logs, adjacent positions) are read at once.
      let j = 0;
      while (j < n) {
        const loc = merged.get(first + j) as number;
        let k = 1;
        const follows = (next: number | undefined): boolean =>
          next !== undefined && (loc < 0 ? next === loc : next === loc + k * CHUNK_BYTES && Math.floor(next / LOG_SPAN) === Math.floor(loc / LOG_SPAN));
        while (j + k < n && follows(merged.get(first + j + k))) k++;
        const at = j * CHUNK_BYTES;
        const bytes = Math.min(data.length - at, k * CHUNK_BYTES);
        if (loc === LOC_SNAPSHOT) {
          (await snapshot.read(first + j, first + j + k)).copy(data, at);
        } else if (loc !== LOC_ZERO) {
          const log = this.tracker.logOf(logs, Math.floor(loc / LOG_SPAN));
          (await log.read(loc % LOG_SPAN, bytes)).copy(data, at);
        }
        j += k;
      }
      yield { offset: start, data };
      i += n;
    }
  }

  /**
   * Full: the shared full compare (src/changetracking/scan/full-compare.ts) over
   * the image as of the cut: data is read through the snapshot, holes are found
   * with SEEK_DATA on the image and skipped (and released from the snapshot).
   */
  private async *compare(): AsyncGenerator<ChangedExtent & { digests: Buffer }> {
    const { map, snapshot, sizeBytes, imagePath } = this.parts;
    const holes = await DiskFile.open(imagePath);
    try {
      const source = {
        sizeBytes,
        read: async (offset: number, length: number): Promise<Buffer> => {
          const data = await snapshot.read(offset / CHUNK_BYTES, Math.ceil((offset + length) / CHUNK_BYTES));
          return data.subarray(0, length);
        },
        extents: async (offset: number, length: number): Promise<Extent[]> => {
          const extents = await holes.extents(offset, Math.min(length, sizeBytes - offset));
          for (const e of extents) {
            if (e.zero) snapshot.consume(Math.ceil(e.offset / CHUNK_BYTES), Math.floor((e.offset + e.length) / CHUNK_BYTES));
          }
          return extents;
        },
      };
      yield* fullCompare(source, map, { pool: null });
    } finally {
      await holes.close();
    }
  }

  async commit(): Promise<void> {
    if (this.state === 'committed') return;
    if (this.state === 'aborted') throw new LifeboatError('INTERNAL', `cut ${this.id} was aborted; it cannot be committed`);
    if (!this.sealed) throw new LifeboatError('INTERNAL', `cut ${this.id} committed before its changes were read to the end`);
    this.state = 'committed';
    await this.tracker.finishCut(this, 'commit');
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    if (this.state === 'committed') throw new LifeboatError('INTERNAL', `cut ${this.id} was committed; it cannot be aborted`);
    this.state = 'aborted';
    this.tracker.releaseSnapshot(this.parts.snapshot);
    await this.staging?.discard().catch(() => undefined);
    await this.tracker.finishCut(this, 'abort');
  }
}
