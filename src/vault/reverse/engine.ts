import { randomBytes } from 'node:crypto';
import { sleep } from '../../core/sleep.js';
import type { ChangeTracker } from '../../changetracking/tracker.js';
import type { BlockSource } from '../../core/block-source.js';
import { LifeboatError } from '../../core/errors.js';
import type { ReplicatedItem } from '../../core/model.js';
import { DIGEST_BLOCK_BYTES, DIGEST_SHA256_BYTES, allBlockDigests } from '../../protocol/reverse-digests.js';
import type { RecoveryDeps } from '../recovery/module.js';

/**
 * The vault's side of reverse replication (docs/recovery.md, "Reprotect and
 * failback"): per item, a queue of 4 KiB blocks of the replica machine's disks for
 * the primary machine's agent, numbered by sequence, kept in the database (settings
 * `reverse:<itemId>`) so a vault restart resumes where it was. An entry names blocks,
 * not bytes: the agent's pull reads them from the replica as they are then, so a
 * block queued twice or sent again after a restart is written with its newest content
 * (writing a block again is harmless). An acknowledgement removes the entries up to
 * its sequence and counts their bytes once.
 *
 * Which blocks differ is learnt two ways: a digest compare (the agent posts SHA-256 per
 * 64 KiB block of its disks, the vault reads the replica's disks and compares; a block
 * that differs is queued whole, as its 16 blocks of 4 KiB), and the replica's change
 * tracker (the compute driver's openChanges: the 4 KiB blocks the guest wrote), cut
 * every policy interval while reverse replication runs and once more before failback
 * stops the replica. So scattered small writes ship as 4 KiB each, not 64 KiB.
 */

/** The digest compare's block (src/protocol/reverse-digests.ts: the agent digests the same grid). */
export const BLOCK_BYTES = DIGEST_BLOCK_BYTES;
/** The queue's block: what the change tracker reports, and what a queue entry counts. */
export const QUEUE_BLOCK_BYTES = 4096;
const QUEUE_BLOCKS_PER_DIGEST = BLOCK_BYTES / QUEUE_BLOCK_BYTES;
/** Queue blocks per queue entry (1 MiB): one run of adjacent blocks at most. */
const RUN_BLOCKS = 256;
/** Byte counts of the last jobs kept in the state (the CLI prints them). */
const JOBS_KEPT = 20;

export interface QueueEntry {
  readonly sequence: number;
  readonly disk: string;
  /** In QUEUE_BLOCK_BYTES units. */
  readonly firstBlock: number;
  readonly count: number;
}

export interface ReverseState {
  readonly version: 1;
  /** A new id per reprotect: the agent's acknowledgements and digests name it. */
  readonly session: string;
  /** The replica machine (compute driver id). */
  readonly machineId: string;
  readonly nextSequence: number;
  /** The highest sequence the agent acknowledged. */
  readonly acked: number;
  readonly queue: readonly QueueEntry[];
  /** Bytes and blocks written by the agent (acknowledged), this session. */
  readonly bytesShipped: number;
  readonly blocksShipped: number;
  /** The digest request whose compare was queued (a job step that ran again skips it). */
  readonly comparedRequest: string | null;
  /** Bytes and blocks acknowledged while each job ran (reprotect, failback). */
  readonly jobs: Readonly<Record<string, { readonly bytes: number; readonly blocks: number }>>;
  /** The job that ran last; acknowledgements count on it. */
  readonly currentJob: string | null;
  /** Failback finished: the next reprotect starts a new session (the byte counts stay for the CLI). */
  readonly ended: boolean;
  readonly updatedAt: string;
}

export function reverseKey(itemId: string): string {
  return `reverse:${itemId}`;
}

/** A digest piece the agent posted (routes.ts). */
export interface DigestPiece {
  readonly session: string;
  readonly request: string;
  readonly disk: string;
  readonly sizeBytes: number;
  readonly firstBlock: number;
  readonly digests: Buffer;
  readonly last: boolean;
}

interface ReceivedDisk {
  readonly sizeBytes: number;
  readonly digests: Buffer;
  complete: boolean;
}

/** A read of the replica's disk, closed after use. */
async function withDisk<T>(deps: RecoveryDeps, machineId: string, disk: string, fn: (source: BlockSource) => Promise<T>): Promise<T> {
  const source = await deps.compute.readDisk(machineId, disk);
  try {
    return await fn(source);
  } finally {
    await source.close();
  }
}

export class ReverseEngine {
  /** One mutation of an item's state at a time (acknowledgements, cuts, compares). */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Digests received per item for the outstanding request (in memory: a restart asks again). */
  private readonly received = new Map<string, { request: string; disks: Map<string, ReceivedDisk> }>();
  private readonly trackers = new Map<string, ChangeTracker>();
  private readonly sizes = new Map<string, number>();

  constructor(private readonly deps: RecoveryDeps) {}

  async state(itemId: string): Promise<ReverseState | undefined> {
    return this.deps.repos.settings.get<ReverseState>(reverseKey(itemId));
  }

  async requireState(itemId: string): Promise<ReverseState> {
    const s = await this.state(itemId);
    if (!s || s.ended) throw new LifeboatError('NOT_FOUND', `item ${itemId} has no reverse replication`, { details: { item: itemId } });
    return s;
  }

  private async mutate<T>(itemId: string, fn: (s: ReverseState | undefined) => Promise<{ next: ReverseState | undefined; value: T }>): Promise<T> {
    const before = this.locks.get(itemId) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(async () => {
      const { next, value } = await fn(await this.state(itemId));
      if (next) await this.deps.repos.settings.set(reverseKey(itemId), { ...next, updatedAt: this.deps.now().toISOString() });
      return value;
    });
    this.locks.set(itemId, run);
    try {
      return await run;
    } finally {
      if (this.locks.get(itemId) === run) this.locks.delete(itemId);
    }
  }

  /** Starts (or continues) the item's reverse session towards its agent; the job's acknowledged bytes count from here. */
  async begin(item: ReplicatedItem, machineId: string, jobId: string): Promise<ReverseState> {
    const s = await this.mutate(item.id, async (s) => {
      const fresh = !s || s.ended;
      const base: ReverseState = !fresh ? s : {
        version: 1,
        session: `rv-${randomBytes(8).toString('hex')}`,
        machineId,
        nextSequence: 1,
        acked: 0,
        queue: [],
        bytesShipped: 0,
        blocksShipped: 0,
        comparedRequest: null,
        jobs: s?.jobs ?? {},
        currentJob: null,
        ended: false,
        updatedAt: '',
      };
      const jobs = { ...base.jobs, [jobId]: base.jobs[jobId] ?? { bytes: 0, blocks: 0 } };
      const kept = Object.fromEntries(Object.entries(jobs).slice(-JOBS_KEPT));
      const next = { ...base, machineId, jobs: kept, currentJob: jobId };
      return { next, value: next };
    });
    const requests = await this.deps.agents.requests(item.id);
    if (requests.reverse?.session !== s.session) await this.deps.agents.setRequests(item.id, { reverse: { session: s.session, digestsWanted: null } });
    return s;
  }

  /** Forgets the item's reverse replication (failback done). */
  async end(itemId: string): Promise<void> {
    await this.closeTrackers(itemId);
    await this.mutate(itemId, async (s) => ({ next: s && { ...s, queue: [], ended: true }, value: undefined }));
    this.received.delete(itemId);
    await this.deps.agents.setRequests(itemId, { reverse: null });
  }

  /** Queues blocks of a disk (sorted or not; duplicates of one call are merged) as runs of adjacent blocks. */
  async enqueue(itemId: string, disk: string, blocks: Iterable<number>): Promise<number> {
    const sorted = [...new Set(blocks)].sort((a, b) => a - b);
    if (sorted.length === 0) return 0;
    return this.mutate(itemId, async (s) => {
      if (!s || s.ended) throw new LifeboatError('NOT_FOUND', `item ${itemId} has no reverse replication`);
      const added: QueueEntry[] = [];
      let sequence = s.nextSequence;
      for (let i = 0; i < sorted.length; ) {
        const first = sorted[i] as number;
        let count = 1;
        while (i + count < sorted.length && count < RUN_BLOCKS && sorted[i + count] === first + count) count++;
        added.push({ sequence: sequence++, disk, firstBlock: first, count });
        i += count;
      }
      return { next: { ...s, nextSequence: sequence, queue: [...s.queue, ...added] }, value: sorted.length };
    });
  }

  /** The next entries to send (those not acknowledged), as blocks with their current content, up to about `maxBytes`. */
  async batch(itemId: string, session: string, maxBytes: number): Promise<{ session: string; blocks: { sequence: number; disk: string; offset: number; data: Buffer }[] }> {
    const s = await this.requireState(itemId);
    if (session !== s.session) throw sessionConflict(itemId, session, s.session);
    const picked: QueueEntry[] = [];
    let bytes = 0;
    for (const e of s.queue) {
      if (picked.length > 0 && bytes + e.count * QUEUE_BLOCK_BYTES > maxBytes) break;
      picked.push(e);
      bytes += e.count * QUEUE_BLOCK_BYTES;
    }
    const blocks: { sequence: number; disk: string; offset: number; data: Buffer }[] = [];
    const byDisk = new Map<string, QueueEntry[]>();
    for (const e of picked) byDisk.set(e.disk, [...(byDisk.get(e.disk) ?? []), e]);
    for (const [disk, entries] of byDisk) {
      await withDisk(this.deps, s.machineId, disk, async (source) => {
        for (const e of entries) {
          const offset = e.firstBlock * QUEUE_BLOCK_BYTES;
          const length = Math.max(0, Math.min(e.count * QUEUE_BLOCK_BYTES, source.sizeBytes - offset));
          blocks.push({ sequence: e.sequence, disk, offset, data: length > 0 ? await source.read(offset, length) : Buffer.alloc(0) });
        }
      });
    }
    blocks.sort((a, b) => a.sequence - b.sequence);
    return { session: s.session, blocks };
  }

  /** The agent wrote and fsynced everything up to `sequence`: those entries leave the queue and count once. */
  async ack(itemId: string, session: string, sequence: number): Promise<ReverseState> {
    return this.mutate(itemId, async (s) => {
      if (!s || s.ended) throw new LifeboatError('NOT_FOUND', `item ${itemId} has no reverse replication`);
      if (session !== s.session) throw sessionConflict(itemId, session, s.session);
      const done = s.queue.filter((e) => e.sequence <= sequence);
      if (done.length === 0) return { next: undefined, value: s };
      const sizes = await this.diskSizes(s);
      let bytes = 0;
      let blocks = 0;
      for (const e of done) {
        const size = sizes.get(e.disk) ?? 0;
        bytes += Math.max(0, Math.min(e.count * QUEUE_BLOCK_BYTES, size - e.firstBlock * QUEUE_BLOCK_BYTES));
        blocks += e.count;
      }
      const jobs = { ...s.jobs };
      if (s.currentJob) {
        const j = jobs[s.currentJob] ?? { bytes: 0, blocks: 0 };
        jobs[s.currentJob] = { bytes: j.bytes + bytes, blocks: j.blocks + blocks };
      }
      const next: ReverseState = {
        ...s,
        acked: Math.max(s.acked, sequence),
        queue: s.queue.filter((e) => e.sequence > sequence),
        bytesShipped: s.bytesShipped + bytes,
        blocksShipped: s.blocksShipped + blocks,
        jobs,
      };
      return { next, value: next };
    });
  }

  private async diskSizes(s: ReverseState): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    for (const disk of new Set(s.queue.map((e) => e.disk))) {
      // A replica disk's size does not change while it is replicated back: read once per machine and disk.
      const key = `${s.machineId}/${disk}`;
      let size = this.sizes.get(key);
      if (size === undefined) {
        size = await withDisk(this.deps, s.machineId, disk, async (src) => src.sizeBytes);
        this.sizes.set(key, size);
      }
      sizes.set(disk, size);
    }
    return sizes;
  }

  /** Asks the agent for its digests (a new request id); the pieces it posts are kept for waitForDigests. */
  async requestDigests(item: ReplicatedItem): Promise<string> {
    const s = await this.requireState(item.id);
    const request = `dg-${randomBytes(8).toString('hex')}`;
    this.received.set(item.id, { request, disks: new Map() });
    await this.deps.agents.setRequests(item.id, { reverse: { session: s.session, digestsWanted: request } });
    return request;
  }

  /** A piece of the agent's digests (the digests route). */
  async receiveDigests(itemId: string, piece: DigestPiece): Promise<void> {
    const s = await this.requireState(itemId);
    if (piece.session !== s.session) throw sessionConflict(itemId, piece.session, s.session);
    const r = this.received.get(itemId);
    // Digests of an older request (or one from before a restart) are not wanted any more: ignored.
    if (!r || r.request !== piece.request) return;
    const blocks = Math.ceil(piece.sizeBytes / BLOCK_BYTES);
    if (piece.digests.length % DIGEST_SHA256_BYTES !== 0 || piece.firstBlock + piece.digests.length / DIGEST_SHA256_BYTES > blocks) {
      throw new LifeboatError('VALIDATION', `digests of disk ${piece.disk} go past its ${piece.sizeBytes} bytes`, { details: { disk: piece.disk } });
    }
    let d = r.disks.get(piece.disk);
    if (!d || d.sizeBytes !== piece.sizeBytes) {
      d = { sizeBytes: piece.sizeBytes, digests: Buffer.alloc(blocks * DIGEST_SHA256_BYTES), complete: false };
      r.disks.set(piece.disk, d);
    }
    piece.digests.copy(d.digests, piece.firstBlock * DIGEST_SHA256_BYTES);
    if (piece.last) d.complete = true;
  }

  /** Resolves with the agent's digests per disk once every disk of the item arrived whole. */
  async waitForDigests(item: ReplicatedItem, request: string, signal: AbortSignal, timeoutMs: number): Promise<Map<string, ReceivedDisk>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.received.get(item.id);
      if (r?.request === request && item.disks.every((d) => r.disks.get(d.name)?.complete)) {
        await this.deps.agents.setRequests(item.id, { reverse: { session: (await this.requireState(item.id)).session, digestsWanted: null } });
        return r.disks;
      }
      if (signal.aborted) throw new LifeboatError('JOB_FAILED', 'the vault stopped while waiting for the agent\'s digests');
      if (Date.now() > deadline) {
        throw new LifeboatError('TIMEOUT', `the agent of item ${item.id} did not post its disks' digests within ${Math.round(timeoutMs / 1000)} s (is it running, in reverse mode, with disks[].file set?)`, {
          details: { item: item.id },
        });
      }
      await sleep(100, signal);
    }
  }

  /**
   * Digest compare: asks the agent for its digests, reads the replica's disks and queues
   * every block that differs (or that the agent's disk does not have). Resolves with the
   * number of blocks queued. Recorded with the request id in the same write as the
   * queue, so a step run again after a restart does not queue them twice.
   */
  async compare(item: ReplicatedItem, signal: AbortSignal, timeoutMs: number): Promise<number> {
    const s = await this.requireState(item.id);
    const request = await this.requestDigests(item);
    const theirs = await this.waitForDigests(item, request, signal, timeoutMs);
    const queued: { disk: string; blocks: number[] }[] = [];
    for (const disk of item.disks) {
      const agent = theirs.get(disk.name) as ReceivedDisk;
      const mine = await withDisk(this.deps, s.machineId, disk.name, (src) => allBlockDigests(src, signal));
      const blocks: number[] = [];
      const theirBlocks = agent.digests.length / DIGEST_SHA256_BYTES;
      for (let i = 0; i < mine.length / DIGEST_SHA256_BYTES; i++) {
        const a = mine.subarray(i * DIGEST_SHA256_BYTES, (i + 1) * DIGEST_SHA256_BYTES);
        if (i >= theirBlocks || !a.equals(agent.digests.subarray(i * DIGEST_SHA256_BYTES, (i + 1) * DIGEST_SHA256_BYTES))) {
          for (let q = 0; q < QUEUE_BLOCKS_PER_DIGEST; q++) blocks.push(i * QUEUE_BLOCKS_PER_DIGEST + q);
        }
      }
      queued.push({ disk: disk.name, blocks });
    }
    let total = 0;
    for (const q of queued) total += await this.enqueue(item.id, q.disk, q.blocks);
    await this.mutate(item.id, async (st) => ({ next: st && { ...st, comparedRequest: request }, value: undefined }));
    return total;
  }

  /** Resolves once the agent acknowledged everything queued; `onProgress` gets 0..100 of what was queued when it started. */
  async drained(itemId: string, signal: AbortSignal, options: { timeoutMs: number; onProgress?: (percent: number) => void }): Promise<ReverseState> {
    const deadline = Date.now() + options.timeoutMs;
    const start = await this.requireState(itemId);
    const total = start.queue.reduce((n, e) => n + e.count, 0);
    for (;;) {
      const s = await this.requireState(itemId);
      const left = s.queue.reduce((n, e) => n + e.count, 0);
      if (total > 0) options.onProgress?.(Math.floor((100 * Math.max(0, total - left)) / total));
      if (left === 0) return s;
      if (signal.aborted) throw new LifeboatError('JOB_FAILED', 'the vault stopped while the agent was writing the blocks');
      if (Date.now() > deadline) {
        throw new LifeboatError('TIMEOUT', `the agent of item ${itemId} did not acknowledge ${left} queued blocks within ${Math.round(options.timeoutMs / 1000)} s`, { details: { item: itemId, blocksLeft: left } });
      }
      await sleep(100, signal);
    }
  }

  /** The replica disk's change tracker, opened once per item and disk; `lost` says a digest compare is needed. */
  async tracker(itemId: string, machineId: string, disk: string): Promise<{ tracker: ChangeTracker; lost: boolean }> {
    const key = `${itemId}/${disk}`;
    const open = this.trackers.get(key);
    if (open) return { tracker: open, lost: false };
    const tracker = await this.deps.compute.openChanges(machineId, disk);
    const opened = await tracker.open();
    if (opened.pendingCutId !== undefined) await tracker.settle(opened.pendingCutId, 'abort');
    this.trackers.set(key, tracker);
    return { tracker, lost: opened.continuity === 'lost' };
  }

  /**
   * Cuts the replica's change tracker of every disk and queues the changed blocks (the
   * cut is committed once they are queued durably: a crash in between queues them again).
   * Resolves with the blocks queued, and whether a tracker lost continuity (a compare is then
   * needed: the caller must run one, the lost tracker's cut was only a fresh start).
   */
  async cutChanges(item: ReplicatedItem): Promise<{ blocks: number; lost: boolean }> {
    const s = await this.requireState(item.id);
    let total = 0;
    let lost = false;
    for (const disk of item.disks) {
      const t = await this.tracker(item.id, s.machineId, disk.name);
      lost ||= t.lost;
      const cut = await t.tracker.cut();
      if (t.lost || cut.full) {
        // A tracker that lost continuity would report the whole disk: its cut only starts the record
        // afresh, and the digest compare the caller runs next finds what differs.
        lost = true;
        await cut.commit();
        continue;
      }
      try {
        const blocks = new Set<number>();
        for await (const e of cut.changes()) {
          if (e.data.length === 0) continue;
          for (let b = Math.floor(e.offset / QUEUE_BLOCK_BYTES); b <= Math.floor((e.offset + e.data.length - 1) / QUEUE_BLOCK_BYTES); b++) blocks.add(b);
        }
        total += await this.enqueue(item.id, disk.name, blocks);
        await cut.commit();
      } catch (err) {
        await cut.abort().catch(() => undefined);
        throw err;
      }
    }
    return { blocks: total, lost };
  }

  /** Starts the trackers' record afresh: what was written before now is covered by the compare that follows. */
  async resetChanges(item: ReplicatedItem): Promise<void> {
    const s = await this.requireState(item.id);
    for (const disk of item.disks) {
      const { tracker } = await this.tracker(item.id, s.machineId, disk.name);
      const cut = await tracker.cut();
      // A cut commits only once its changes were read to the end (the qemu tracker refuses otherwise).
      for await (const _ of cut.changes()) void _;
      await cut.commit();
    }
  }

  async closeTrackers(itemId: string): Promise<void> {
    for (const [key, tracker] of [...this.trackers]) {
      if (!key.startsWith(`${itemId}/`)) continue;
      this.trackers.delete(key);
      await tracker.close().catch(() => undefined);
    }
  }

  async closeAll(): Promise<void> {
    for (const tracker of this.trackers.values()) await tracker.close().catch(() => undefined);
    this.trackers.clear();
  }
}

function sessionConflict(itemId: string, theirs: string, ours: string): LifeboatError {
  return new LifeboatError('CONFLICT', `reverse session ${theirs} of item ${itemId} is not the current one (${ours}); follow the vault's configuration`, { details: { item: itemId, session: ours } });
}

