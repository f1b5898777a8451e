import type { ChangeTracker, Cut } from '../changetracking/tracker.js';
import type { AgentCommandResult, AgentMode } from '../core/model.js';
import { join } from 'node:path';
import { asLifeboatError, LifeboatError, isLifeboatError } from '../core/errors.js';
import type { Welcome } from '../protocol/messages.js';
import { systemClock, type Clock } from './clock.js';
import type { AgentConfig, AgentFileConfig, DiskSpec } from './config.js';
import { Freezer, processRunner, type CommandRunner } from './freeze.js';
import { blockDigests } from '../protocol/reverse-digests.js';
import { DIGESTS_PER_PIECE, openDiskFile, rebuildDigestMap, writeBlocks } from './reverse.js';
import { MAX_SEGMENT_DATA_BYTES, pieceFlags, piecesOf } from './segments.js';
import { StateDir, type DiskState } from './state.js';
import { TokenBucket } from './throttle.js';
import type { Transport, TransportFactory } from './transport.js';
import type { DiskReport, DiskReportState, HeartbeatReport, VaultClient } from './vault-client.js';

/**
 * The mobility agent's core (docs/replication.md, "Agent: cuts, sequences and
 * restarts"): per disk a change tracker, one cut at a time shipped as numbered
 * segments over one connection to the process server, committed when the last
 * segment is acknowledged; a heartbeat to the vault every 5 s whose answer
 * (pause, throttle, frequencies, process-server address, generation) it obeys.
 *
 * Everything that touches the outside is injected — clock, trackers, the
 * connection factory, the vault client, the freezer — so tests drive it with the
 * fake tracker and an in-memory process server. `run(signal)` returns when
 * `signal` aborts, after finishing or aborting the cut in progress.
 */

export interface AgentIdentity {
  readonly machineId: string;
  readonly itemId: string;
  /** Bearer token for the agent routes of the vault. */
  readonly credential: string;
}

export type AgentEvent =
  | { readonly event: 'started'; readonly disks: readonly string[] }
  | { readonly event: 'connected'; readonly processServer: string; readonly acked: Readonly<Record<string, number>> }
  | { readonly event: 'disconnected'; readonly code: string; readonly message: string; readonly retryInMs: number }
  | { readonly event: 'tracker-opened'; readonly disk: string; readonly continuity: 'continuous' | 'lost'; readonly reason?: string }
  | { readonly event: 'recovered'; readonly disk: string; readonly cutId: string; readonly outcome: 'commit' | 'abort'; readonly nextSequence: number }
  | { readonly event: 'cut-started'; readonly disk: string; readonly cutId: string; readonly full: boolean; readonly appConsistent: boolean; readonly estimatedBytes: number; readonly firstSequence: number }
  | { readonly event: 'progress'; readonly disk: string; readonly shippedBytes: number; readonly estimatedBytes: number }
  | {
      readonly event: 'cut-committed';
      readonly disk: string;
      readonly cutId: string;
      readonly firstSequence: number;
      readonly lastSequence: number;
      readonly bytes: number;
      readonly full: boolean;
      readonly appConsistent: boolean;
      readonly capturedAtMs: number;
    }
  | { readonly event: 'cut-aborted'; readonly disk: string; readonly cutId: string; readonly reason: string }
  | { readonly event: 'freeze-failed'; readonly disk: string; readonly message: string }
  | { readonly event: 'disk-error'; readonly disk: string; readonly code: string; readonly message: string }
  | { readonly event: 'heartbeat-failed'; readonly code: string; readonly message: string }
  | { readonly event: 'config'; readonly paused: boolean; readonly throttleBytesPerSec: number; readonly generation: number; readonly mode: AgentMode }
  | { readonly event: 'mode'; readonly mode: AgentMode }
  | { readonly event: 'command'; readonly kind: 'shutdown' | 'start'; readonly id: string; readonly ok: boolean; readonly error: string | null }
  | { readonly event: 'reverse-digests'; readonly session: string; readonly request: string; readonly disks: readonly string[] }
  | { readonly event: 'reverse-written'; readonly session: string; readonly lastSequence: number; readonly bytes: number }
  | { readonly event: 'reverse-error'; readonly code: string; readonly message: string }
  | { readonly event: 'digest-map-rebuilt'; readonly disk: string }
  | { readonly event: 'stopped' };

export interface AgentOptions {
  readonly stateDir: string;
  readonly config: AgentFileConfig;
  /** The last AgentConfig the vault gave (enrollment or a heartbeat); default: `<stateDir>/config.json`. */
  readonly initialConfig?: AgentConfig;
  /** Default: read from `<stateDir>/identity`. */
  readonly identity?: AgentIdentity;
  readonly vault: VaultClient;
  readonly connect: TransportFactory;
  readonly openTracker: (disk: DiskSpec) => Promise<ChangeTracker>;
  readonly clock?: Clock;
  /** Default: a Freezer over `config.freeze` running fsfreeze and the scripts. */
  readonly freezer?: Freezer;
  /** Segments unacknowledged at most (default 8). */
  readonly window?: number;
  readonly heartbeatIntervalMs?: number;
  /** Reconnect backoff: doubles from `minBackoffMs` up to this (default 250 ms → 5 s). */
  readonly maxBackoffMs?: number;
  readonly minBackoffMs?: number;
  /** How long to wait after SPOOL_FULL before sending again (default 5 s). */
  readonly spoolFullWaitMs?: number;
  /** On stop, how long outstanding ACKs are awaited before the cut is aborted (default 10 s). */
  readonly stopGraceMs?: number;
  readonly maxSegmentBytes?: number;
  readonly version?: string;
  readonly onEvent?: (event: AgentEvent) => void;
  /** Runs the machine's shutdown and start commands (default: child processes). */
  readonly runner?: CommandRunner;
  /** In reverse mode, how long to wait before asking again when nothing is queued (default 1 s). */
  readonly reversePollMs?: number;
  /** Bytes of blocks asked for per reverse batch (default 4 MiB). */
  readonly reverseBatchBytes?: number;
}

/** A cut taken and not yet shipped. */
interface TakenCut {
  readonly cut: Cut;
  /** Taken while every configured filesystem was frozen. */
  readonly appConsistent: boolean;
}

/** A cut taken and not yet settled. */
interface OpenCut {
  readonly cut: Cut;
  readonly appConsistent: boolean;
  readonly firstSequence: number;
  lastSequence?: number;
  bytes: number;
}

interface DiskRuntime {
  readonly spec: DiskSpec;
  tracker?: ChangeTracker;
  state: DiskState;
  /** The next cut must be full (first start, continuity lost, tracker failed). */
  fullPending: boolean;
  /** A cut of a previous process the tracker still holds (open() said so). */
  pendingCutId?: string;
  open?: OpenCut;
  /** Cut in an app-consistent round, waiting for this disk's loop to ship it. */
  taken?: TakenCut;
  acked: number;
  sizeBytes: number;
  shippedBytes: number;
  estimatedBytes: number;
  lastCutAtMs: number;
  lastAppAttemptAtMs: number;
  /** After a tracker failure no cut is taken before this (one crash interval): no busy retry. */
  notBeforeMs: number;
  /** GENERATION_FENCED: not replicated until the vault gives a newer generation. */
  fenced: boolean;
  lastError: string | null;
}

class Stop extends Error {
  constructor() {
    super('stopping');
  }
}

/** Counts unacknowledged segments across disks; acquire waits for a free slot. */
class Slots {
  private used = 0;
  private waiters: (() => void)[] = [];
  constructor(private readonly size: number) {}
  async acquire(signal: AbortSignal): Promise<void> {
    while (this.used >= this.size) {
      if (signal.aborted) throw new Stop();
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.waiters.push(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
    if (signal.aborted) throw new Stop();
    this.used++;
  }
  release(): void {
    this.used--;
    this.waiters.shift()?.();
  }
}

export const HEARTBEAT_INTERVAL_MS = 5000;

/** The mode a configuration asks for (absent: replicate, as from a vault that predates modes). */
export function modeOf(config: AgentConfig): AgentMode {
  return config.mode ?? 'replicate';
}

export class Agent {
  private readonly clock: Clock;
  private readonly state: StateDir;
  private readonly identity: AgentIdentity;
  private readonly disks: DiskRuntime[];
  private readonly bucket: TokenBucket;
  private readonly slots: Slots;
  private readonly freezer: Freezer;
  private config: AgentConfig;
  /** Aborted (and replaced) whenever the config changes: wakes every sleeping loop. */
  private wake = new AbortController();
  /** Aborted to make the current connection end (address or generation changed). */
  private sessionReset = new AbortController();
  private connected = false;
  private started = false;
  private stopSignal: AbortSignal | undefined;
  /** The app-consistent round under way, shared by the disks' loops. */
  private round: Promise<void> | undefined;
  /** The mode obeyed now: follows the vault's (config.mode) once the session has ended and the trackers are where the mode needs them. */
  private mode: AgentMode = 'replicate';
  /** The last shutdown / start request run (persisted: each id runs once). */
  private commands: { shutdown: AgentCommandResult | null; start: AgentCommandResult | null };
  private commandRunning = false;
  /** The digest request of the reverse session answered last (a new one asks again). */
  private digestsPosted: string | undefined;
  /** Reverse replication's progress this process, for the heartbeat. */
  private reverseProgress: { session: string; lastSequence: number; bytesWritten: number } | null = null;

  constructor(private readonly options: AgentOptions) {
    this.clock = options.clock ?? systemClock;
    this.state = new StateDir(options.stateDir);
    const config = options.initialConfig ?? this.state.config();
    if (!config) throw new LifeboatError('NOT_FOUND', `no agent configuration in ${options.stateDir}: enroll the agent first`, { details: { stateDir: options.stateDir } });
    this.config = config;
    if (options.identity) this.identity = options.identity;
    else {
      const id = this.state.identity();
      this.identity = { machineId: id.machineId, itemId: id.itemId, credential: id.credential };
    }
    this.bucket = new TokenBucket(this.clock, this.effectiveRate());
    this.slots = new Slots(options.window ?? 8);
    this.freezer = options.freezer ?? new Freezer(options.config.freeze, this.clock);
    this.commands = this.state.commandResults();
    this.disks = options.config.disks.map((spec) => {
      const saved = this.state.diskState(spec.name);
      const state: DiskState = saved ?? {
        generation: config.generation,
        nextSequence: 1,
        inFlight: null,
        lastCommitted: null,
        lastAppConsistentAtMs: null,
      };
      return {
        spec,
        state,
        fullPending: true,
        acked: state.nextSequence - 1,
        sizeBytes: 0,
        shippedBytes: 0,
        estimatedBytes: 0,
        lastCutAtMs: state.lastCommitted?.capturedAtMs ?? 0,
        lastAppAttemptAtMs: state.lastAppConsistentAtMs ?? 0,
        notBeforeMs: 0,
        fenced: false,
        lastError: null,
      };
    });
  }

  /** The config the agent obeys now (the vault's last answer). */
  get currentConfig(): AgentConfig {
    return this.config;
  }

  /** The store disk of a local disk: the vault's mapping, else `<itemId>.<name>`. */
  storeDisk(name: string): string {
    return this.config.disks.find((d) => d.name === name)?.storeDisk ?? `${this.identity.itemId}.${name}`;
  }

  /** What the next heartbeat reports (docs/replication.md). */
  report(): HeartbeatReport {
    const now = this.clock.now();
    const disks = this.disks.map((d): DiskReport => {
      let state: DiskReportState;
      if (this.mode !== 'replicate') state = 'paused';
      else if (d.fenced || (this.started && !d.tracker)) state = 'error';
      else if (this.config.paused) state = 'paused';
      else if (d.fullPending) state = d.state.lastCommitted === null ? 'initial' : 'resync';
      else state = 'continuous';
      // The oldest cut not yet acknowledged; while no connection lets a cut be taken, the replica lags since the last committed one.
      const lagSince = d.open ? d.open.cut.capturedAtMs : !this.connected && !this.config.paused ? d.state.lastCommitted?.capturedAtMs : undefined;
      const initialPercent = !d.fullPending ? 100 : d.estimatedBytes > 0 ? Math.min(99, Math.floor((100 * d.shippedBytes) / d.estimatedBytes)) : 0;
      return {
        name: d.spec.name,
        sizeBytes: d.sizeBytes,
        state,
        initialPercent,
        ackedSequence: d.acked,
        lagMs: Math.max(0, Math.round(lagSince === undefined ? 0 : now - lagSince)),
        // The vault keeps at most 4096 characters of it.
        lastError: d.lastError === null ? null : d.lastError.slice(0, 4000),
      };
    });
    return {
      disks,
      version: this.options.version ?? '0.0.0',
      mode: this.mode,
      shutdown: this.commands.shutdown,
      start: this.commands.start,
      reverse: this.mode === 'reverse' ? this.reverseProgress : null,
    };
  }

  /** Sends one heartbeat and obeys the answer; on failure the last config stays in force. */
  async heartbeat(): Promise<boolean> {
    try {
      const config = await this.options.vault.heartbeat(this.identity.credential, this.report());
      this.applyConfig(config);
      void this.runRequests();
      return true;
    } catch (err) {
      const e = asLifeboatError(err, 'SERVER_UNREACHABLE');
      this.emit({ event: 'heartbeat-failed', code: e.code, message: e.message });
      return false;
    }
  }

  /** Takes the vault's answer: persists it, retunes the throttle, wakes the loops, and reconnects if the address or a generation changed. */
  applyConfig(config: AgentConfig): void {
    const before = this.config;
    this.config = config;
    if (JSON.stringify(before) !== JSON.stringify(config)) {
      this.state.saveConfig(config);
      this.emit({ event: 'config', paused: config.paused, throttleBytesPerSec: config.throttleBytesPerSec, generation: config.generation, mode: modeOf(config) });
    }
    this.bucket.setRate(this.effectiveRate());
    let reset =
      JSON.stringify(before.processServer) !== JSON.stringify(config.processServer) ||
      JSON.stringify(before.disks) !== JSON.stringify(config.disks) ||
      modeOf(before) !== modeOf(config);
    for (const d of this.disks) {
      // Fenced or reverse: a new generation is the vault's, not this source's; it is taken when the vault says replicate again.
      if (modeOf(config) === 'replicate' && config.generation > d.state.generation) {
        // A new generation (re-protection after failback): numbering starts again at 1 and the disk leaves the fence.
        d.state = { ...d.state, generation: config.generation, nextSequence: 1, inFlight: null };
        d.acked = 0;
        d.fenced = false;
        d.lastError = null;
        d.fullPending = true;
        this.state.saveDiskState(d.spec.name, d.state);
        reset = true;
      }
    }
    if (reset) this.resetSession();
    this.wakeLoops();
  }

  /** Wakes every sleeping loop to look again (config changed, cuts of a round are waiting). */
  private wakeLoops(): void {
    const wake = this.wake;
    this.wake = new AbortController();
    wake.abort();
  }

  /**
   * Runs until `signal` aborts: opens the trackers, heartbeats, connects (with
   * backoff), recovers from WELCOME and replicates. Resolves after a clean stop.
   */
  async run(signal: AbortSignal): Promise<void> {
    if (this.started) throw new LifeboatError('INTERNAL', 'Agent.run() was called twice');
    this.started = true;
    this.stopSignal = signal;
    // In reverse mode the disks are written by the vault's blocks: no tracker is opened until replication resumes
    // (and, when reverse replication wrote them, their digest maps are rebuilt first).
    this.mode = modeOf(this.config) === 'reverse' || this.state.reverseMarker() ? 'reverse' : 'replicate';
    if (this.mode === 'replicate') for (const d of this.disks) await this.openTracker(d);
    this.emit({ event: 'started', disks: this.disks.map((d) => d.spec.name) });
    const heartbeats = this.heartbeatLoop(signal);
    try {
      await this.replicationLoop(signal);
    } finally {
      await heartbeats;
      for (const d of this.disks) {
        // Cut in a round and never shipped: nothing of it left the machine.
        if (d.taken) await d.taken.cut.abort().catch(() => undefined);
        d.taken = undefined;
        await d.tracker?.close().catch(() => undefined);
      }
      this.emit({ event: 'stopped' });
    }
  }

  private async heartbeatLoop(signal: AbortSignal): Promise<void> {
    const every = this.options.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS;
    while (!signal.aborted) {
      await this.heartbeat();
      await this.clock.sleep(every, signal);
    }
  }

  private async openTracker(d: DiskRuntime): Promise<void> {
    if (d.tracker) return;
    let tracker: ChangeTracker | undefined;
    try {
      tracker = await this.options.openTracker(d.spec);
      const opened = await tracker.open();
      d.tracker = tracker;
      d.fullPending = opened.continuity === 'lost';
      d.pendingCutId = opened.pendingCutId;
      this.emit({ event: 'tracker-opened', disk: d.spec.name, continuity: opened.continuity, ...(opened.reason ? { reason: opened.reason } : {}) });
    } catch (err) {
      await tracker?.close().catch(() => undefined);
      throw isLifeboatError(err) ? err : new LifeboatError('TRACKER_FAILED', `disk ${d.spec.name}: the ${d.spec.tracker.kind} tracker did not open: ${(err as Error).message}`, { cause: err });
    }
  }

  private effectiveRate(): number {
    const rates = [this.config.throttleBytesPerSec, this.options.config.maxBytesPerSec].filter((r) => r > 0);
    return rates.length === 0 ? 0 : Math.min(...rates);
  }

  private emit(event: AgentEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch {
      // An observer's failure must not stop replication.
    }
  }

  private resetSession(): void {
    const r = this.sessionReset;
    this.sessionReset = new AbortController();
    r.abort();
  }

  private async replicationLoop(signal: AbortSignal): Promise<void> {
    let attempt = 0;
    while (!signal.aborted) {
      const wanted = modeOf(this.config);
      if (wanted !== this.mode) {
        try {
          await this.enterMode(wanted);
        } catch (err) {
          // E.g. a digest map that could not be rebuilt: stay out of replication and try again.
          const e = asLifeboatError(err, 'TRACKER_FAILED');
          this.emit({ event: 'reverse-error', code: e.code, message: e.message });
          await this.clock.sleep(this.options.maxBackoffMs ?? 5000, AbortSignal.any([signal, this.wake.signal]));
          continue;
        }
      }
      if (this.mode === 'reverse') {
        await this.reverseRound(signal);
        continue;
      }
      if (this.mode !== 'replicate') {
        // Fenced (the item failed over): nothing is shipped and no session is open.
        await this.clock.sleep(1000, AbortSignal.any([signal, this.wake.signal]));
        continue;
      }
      // A tracker that could not open when replication resumed (e.g. the qemu tracker before its machine
      // is started again after failback) is tried again every crash interval.
      const closed = this.disks.filter((d) => !d.fenced && !d.tracker && d.notBeforeMs <= this.clock.now());
      for (const d of closed) {
        await this.reopenTracker(d);
        if (!d.tracker) d.notBeforeMs = this.clock.now() + this.config.crashConsistentFrequencySeconds * 1000;
      }
      const active = this.disks.filter((d) => !d.fenced && d.tracker);
      if (active.length === 0) {
        await this.clock.sleep(1000, AbortSignal.any([signal, this.wake.signal]));
        continue;
      }
      if (this.config.paused && !this.disks.some((d) => d.open)) {
        // Paused: nothing is cut or sent (the trackers keep tracking); no connection is needed.
        await this.clock.sleep(1000, AbortSignal.any([signal, this.wake.signal]));
        continue;
      }
      let transport: Transport | undefined;
      const session = new AbortController();
      const resetSignal = this.sessionReset.signal;
      try {
        const processServer = this.config.processServer;
        transport = await this.options.connect({
          processServer,
          machineId: this.identity.machineId,
          disks: active.map((d) => ({ disk: this.storeDisk(d.spec.name), generation: d.state.generation })),
        });
        this.connected = true;
        attempt = 0;
        const acked = Object.fromEntries(active.map((d) => [d.spec.name, this.welcomeAcked(transport as Transport, d)]));
        this.emit({ event: 'connected', processServer: `${processServer.host}:${processServer.port}`, acked });
        for (const d of active) await this.recover(d, transport.welcome);
        await this.session(active, transport, AbortSignal.any([signal, resetSignal, session.signal]));
      } catch (err) {
        if (signal.aborted && err instanceof Stop) break;
        if (err instanceof Stop) continue; // the session was reset (new address or generation): reconnect at once
        const e = asLifeboatError(err, 'SERVER_UNREACHABLE');
        if (e.code === 'GENERATION_FENCED') {
          this.fence(e, active);
          continue;
        }
        const delay =
          e.code === 'SPOOL_FULL'
            ? (this.options.spoolFullWaitMs ?? 5000)
            : Math.min(this.options.maxBackoffMs ?? 5000, (this.options.minBackoffMs ?? 250) * 2 ** Math.min(attempt, 20));
        attempt++;
        for (const d of active) d.lastError = `${e.code}: ${e.message}`;
        this.emit({ event: 'disconnected', code: e.code, message: e.message, retryInMs: delay });
        await this.clock.sleep(delay, signal);
      } finally {
        this.connected = false;
        session.abort();
        await transport?.close().catch(() => undefined);
      }
    }
  }

  /**
   * Leaves the current mode for `mode`, between sessions: replicate → fenced keeps the
   * trackers (they keep tracking; nothing is cut); → reverse closes them (the disks are
   * written from the vault's blocks); → replicate reopens them.
   */
  private async enterMode(mode: AgentMode): Promise<void> {
    if (mode === 'reverse') {
      for (const d of this.disks) {
        if (d.taken) await d.taken.cut.abort().catch(() => undefined);
        d.taken = undefined;
        if (d.open) await d.open.cut.abort().catch(() => undefined);
        d.open = undefined;
        await d.tracker?.close().catch(() => undefined);
        d.tracker = undefined;
      }
    }
    if (mode === 'replicate') {
      const marker = this.state.reverseMarker();
      if (marker) {
        // The disks were written by reverse replication and now equal the store's newest point:
        // the digest maps say so, and the trackers go on from there (docs/recovery.md).
        for (const d of this.disks) {
          if (d.spec.file === undefined) continue;
          await rebuildDigestMap(d.spec, join(this.state.path, 'disks', d.spec.name, 'tracker'), `reverse-${marker.session}`.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 64));
          this.emit({ event: 'digest-map-rebuilt', disk: d.spec.name });
        }
        this.state.saveReverseMarker(undefined);
      }
      for (const d of this.disks) {
        if (d.tracker) continue;
        try {
          await this.openTracker(d);
        } catch (err) {
          const e = asLifeboatError(err, 'TRACKER_FAILED');
          d.lastError = `${e.code}: ${e.message}`;
          this.emit({ event: 'disk-error', disk: d.spec.name, code: e.code, message: e.message });
        }
      }
    }
    this.mode = mode;
    this.emit({ event: 'mode', mode });
    // Tell the vault at once (it waits for the agent to be in reverse mode before it queues blocks).
    void this.heartbeat();
  }

  /**
   * One round of reverse replication: post the digests the vault asks for, pull a batch
   * of blocks, write and fsync them, acknowledge. Errors are reported and retried after
   * a pause: the vault keeps every block until it is acknowledged.
   */
  private async reverseRound(signal: AbortSignal): Promise<void> {
    const r = this.config.reverse;
    const vault = this.options.vault;
    const pause = (ms: number) => this.clock.sleep(ms, AbortSignal.any([signal, this.wake.signal]));
    if (!r || !vault.reverseBatch || !vault.reverseAck || !vault.reverseDigests) {
      await pause(1000);
      return;
    }
    try {
      if (this.state.reverseMarker()?.session !== r.session) this.state.saveReverseMarker({ session: r.session });
      if (r.digestsWanted !== null && r.digestsWanted !== this.digestsPosted) {
        for (const d of this.disks) {
          const file = await openDiskFile(d.spec);
          try {
            const blocks = Math.ceil(file.sizeBytes / (64 * 1024));
            for await (const piece of blockDigests(file, DIGESTS_PER_PIECE, signal)) {
              await vault.reverseDigests(this.identity.credential, {
                session: r.session,
                request: r.digestsWanted,
                disk: d.spec.name,
                sizeBytes: file.sizeBytes,
                firstBlock: piece.firstBlock,
                digests: piece.digests.toString('base64'),
                last: piece.firstBlock + piece.digests.length / 32 >= blocks,
              });
            }
            if (blocks === 0) {
              await vault.reverseDigests(this.identity.credential, { session: r.session, request: r.digestsWanted, disk: d.spec.name, sizeBytes: 0, firstBlock: 0, digests: '', last: true });
            }
          } finally {
            await file.close();
          }
        }
        this.digestsPosted = r.digestsWanted;
        this.emit({ event: 'reverse-digests', session: r.session, request: r.digestsWanted, disks: this.disks.map((d) => d.spec.name) });
      }
      const batch = await vault.reverseBatch(this.identity.credential, { session: r.session, maxBytes: this.options.reverseBatchBytes ?? 4 * 2 ** 20 });
      if (batch.blocks.length === 0) {
        await pause(this.options.reversePollMs ?? 1000);
        return;
      }
      const blocks = batch.blocks.map((b) => ({ sequence: b.sequence, disk: b.disk, offset: b.offset, data: Buffer.from(b.data, 'base64') }));
      const bytes = await writeBlocks(this.options.config.disks, blocks);
      const last = Math.max(...blocks.map((b) => b.sequence));
      await vault.reverseAck(this.identity.credential, { session: batch.session, sequence: last, bytes });
      const before = this.reverseProgress?.session === batch.session ? this.reverseProgress.bytesWritten : 0;
      this.reverseProgress = { session: batch.session, lastSequence: last, bytesWritten: before + bytes };
      this.emit({ event: 'reverse-written', session: batch.session, lastSequence: last, bytes });
    } catch (err) {
      if (signal.aborted) return;
      const e = asLifeboatError(err, 'SERVER_UNREACHABLE');
      this.emit({ event: 'reverse-error', code: e.code, message: e.message });
      await pause(this.options.maxBackoffMs ?? 5000);
    }
  }

  /** Runs a shutdown or start request the vault made, once per id (the id is recorded before the command runs). */
  private async runRequests(): Promise<void> {
    if (this.commandRunning) return;
    this.commandRunning = true;
    try {
      for (const kind of ['shutdown', 'start'] as const) {
        const request = kind === 'shutdown' ? this.config.shutdownRequest : this.config.startRequest;
        if (!request || this.commands[kind]?.id === request.id) continue;
        const argv = kind === 'shutdown' ? this.options.config.machine.shutdownCommand : this.options.config.machine.startCommand;
        let result: AgentCommandResult;
        if (argv.length === 0) {
          result = { id: request.id, ok: false, error: `agent.json has no machine.${kind}Command` };
        } else {
          // Recorded as done before it runs: a shutdown that takes the agent down with it is not run again at the next boot.
          this.commands = { ...this.commands, [kind]: { id: request.id, ok: true, error: null } };
          this.state.saveCommandResults(this.commands);
          const [command, ...args] = argv as [string, ...string[]];
          const out = await (this.options.runner ?? processRunner).run(command, args, AbortSignal.timeout(this.options.config.machine.timeoutMs));
          result = out.code === 0 ? { id: request.id, ok: true, error: null } : { id: request.id, ok: false, error: `${command} exited ${out.code === null ? 'without a code (killed or not started)' : out.code}: ${out.stderr.trim().slice(0, 1000)}` };
        }
        this.commands = { ...this.commands, [kind]: result };
        this.state.saveCommandResults(this.commands);
        this.emit({ event: 'command', kind, ...result });
        // Tell the vault at once: it waits for the outcome.
        await this.heartbeat();
      }
    } finally {
      this.commandRunning = false;
    }
  }

  private welcomeAcked(transport: Transport, d: DiskRuntime): number {
    const disk = this.storeDisk(d.spec.name);
    return transport.welcome.disks.find((w) => w.disk === disk && w.generation === d.state.generation)?.ackedSequence ?? 0;
  }

  private fence(e: LifeboatError, active: DiskRuntime[]): void {
    const named = typeof e.details.disk === 'string' ? active.filter((d) => this.storeDisk(d.spec.name) === e.details.disk) : [];
    for (const d of named.length > 0 ? named : active) {
      d.fenced = true;
      d.lastError = `GENERATION_FENCED: ${e.message}`;
      this.emit({ event: 'disk-error', disk: d.spec.name, code: e.code, message: `${e.message} (the item was failed over: this disk is no longer replicated)` });
    }
  }

  /**
   * Restart and reconnect recovery (docs/replication.md): the cut in flight is
   * committed if its last segment was acknowledged, else aborted; numbering
   * resumes at ackedSequence + 1.
   */
  private async recover(d: DiskRuntime, welcome: Welcome): Promise<void> {
    const disk = this.storeDisk(d.spec.name);
    const acked = welcome.disks.find((w) => w.disk === disk && w.generation === d.state.generation)?.ackedSequence ?? 0;
    const inFlight = d.state.inFlight;
    let lastCommitted = d.state.lastCommitted;
    let lastApp = d.state.lastAppConsistentAtMs;
    if (inFlight) {
      const outcome = inFlight.lastSequence !== undefined && acked >= inFlight.lastSequence ? 'commit' : 'abort';
      if (d.open && d.open.cut.id === inFlight.cutId) {
        if (outcome === 'commit') await d.open.cut.commit();
        else await d.open.cut.abort();
        if (outcome === 'commit' && d.open.cut.full) d.fullPending = false;
        d.open = undefined;
      } else if (d.tracker) {
        // A cut of an earlier process: the tracker holds it only if it staged it durably; settling an id it does not hold is a no-op.
        const held = d.pendingCutId === inFlight.cutId;
        await d.tracker.settle(inFlight.cutId, outcome);
        if (held) {
          d.pendingCutId = undefined;
          // The tracker committed the staged full compare: continuity is back.
          if (outcome === 'commit' && inFlight.full) d.fullPending = false;
        }
      }
      if (outcome === 'commit') {
        lastCommitted = { capturedAtMs: inFlight.capturedAtMs, lastSequence: inFlight.lastSequence as number, appConsistent: inFlight.appConsistent, full: inFlight.full };
        if (inFlight.appConsistent) lastApp = inFlight.capturedAtMs;
      }
      this.emit({ event: 'recovered', disk: d.spec.name, cutId: inFlight.cutId, outcome, nextSequence: acked + 1 });
    } else if (d.open) {
      // Never persisted as in flight (failed before its first segment): nothing of it reached the process server.
      await d.open.cut.abort();
      d.open = undefined;
    }
    if (d.pendingCutId !== undefined && d.tracker) {
      // Pending in the tracker but unknown to our state: no segment of it can be trusted to be whole.
      await d.tracker.settle(d.pendingCutId, 'abort');
      d.pendingCutId = undefined;
    }
    d.acked = acked;
    d.state = { ...d.state, nextSequence: acked + 1, inFlight: null, lastCommitted, lastAppConsistentAtMs: lastApp };
    this.state.saveDiskState(d.spec.name, d.state);
  }

  /** One connection's life: every active disk ships cuts until the connection fails or the agent stops. */
  private async session(active: DiskRuntime[], transport: Transport, signal: AbortSignal): Promise<void> {
    const inner = new AbortController();
    const sessionSignal = AbortSignal.any([signal, inner.signal]);
    let failure: unknown;
    void transport.closed.then((err) => {
      if (err && failure === undefined) failure = err;
      inner.abort();
    });
    await Promise.all(
      active.map(async (d) => {
        try {
          await this.diskLoop(d, transport, sessionSignal);
        } catch (err) {
          if (!(err instanceof Stop) && failure === undefined) failure = err;
          inner.abort();
        }
      }),
    );
    if (failure !== undefined && !signal.aborted) throw failure;
    throw new Stop();
  }

  private async diskLoop(d: DiskRuntime, transport: Transport, signal: AbortSignal): Promise<void> {
    while (!signal.aborted && !d.fenced) {
      if (d.taken) {
        // Cut in an app-consistent round: ship it before anything else.
        const taken = d.taken;
        d.taken = undefined;
        await this.shipCut(d, transport, taken, signal);
        continue;
      }
      if (!d.tracker) {
        // The tracker failed and could not be reopened: try again every crash interval.
        await this.clock.sleep(this.config.crashConsistentFrequencySeconds * 1000, AbortSignal.any([signal, this.wake.signal]));
        if (!signal.aborted) await this.reopenTracker(d);
        continue;
      }
      if (this.config.paused) {
        await this.clock.sleep(1000, AbortSignal.any([signal, this.wake.signal]));
        continue;
      }
      const now = this.clock.now();
      const crashDue = d.lastCutAtMs + this.config.crashConsistentFrequencySeconds * 1000;
      const appEveryMs = this.config.appConsistentFrequencyMinutes * 60_000;
      const appDue = appEveryMs > 0 ? d.lastAppAttemptAtMs + appEveryMs : Infinity;
      const due = Math.max(d.notBeforeMs, d.fullPending ? now : Math.min(crashDue, appDue));
      if (due > now) {
        await this.clock.sleep(due - now, AbortSignal.any([signal, this.wake.signal]));
        continue;
      }
      if (!d.fullPending && appDue <= now) {
        await this.appRound();
        continue; // ships d.taken (or, if the tracker failed, waits)
      }
      const taken = await this.takeCut(d);
      if (taken) await this.shipCut(d, transport, taken, signal);
    }
    if (signal.aborted) throw new Stop();
  }

  /** A crash-consistent cut of one disk; undefined when the tracker failed (handled: reported, reopened, retried later). */
  private async takeCut(d: DiskRuntime): Promise<TakenCut | undefined> {
    const tracker = d.tracker;
    if (!tracker) throw new LifeboatError('INTERNAL', `disk ${d.spec.name} has no tracker`);
    try {
      return { cut: await tracker.cut(), appConsistent: false };
    } catch (err) {
      await this.trackerFailed(d, err);
      return undefined;
    }
  }

  private async trackerFailed(d: DiskRuntime, err: unknown): Promise<void> {
    // The tracker failed: reopen it, and cut again after one crash interval (a full compare if it says so).
    const e = isLifeboatError(err) ? err : new LifeboatError('TRACKER_FAILED', `disk ${d.spec.name}: ${(err as Error).message}`, { cause: err });
    d.lastError = `${e.code}: ${e.message}`;
    d.lastCutAtMs = this.clock.now();
    d.notBeforeMs = this.clock.now() + this.config.crashConsistentFrequencySeconds * 1000;
    this.emit({ event: 'disk-error', disk: d.spec.name, code: e.code, message: e.message });
    await this.reopenTracker(d);
  }

  /**
   * An app-consistent round: one freeze of the machine's filesystems, and inside
   * it a cut of every disk that is not busy shipping, so the disks' points are of
   * one moment. Each disk's loop then ships its cut. Concurrent callers share the round.
   */
  private appRound(): Promise<void> {
    this.round ??= (async () => {
      try {
        const disks = this.disks.filter((x) => x.tracker && !x.fenced && !x.open && !x.taken && !x.fullPending);
        const now = this.clock.now();
        for (const x of disks) x.lastAppAttemptAtMs = now;
        const failures: [DiskRuntime, unknown][] = [];
        const r = await this.freezer.frozen(async () => {
          const cuts: [DiskRuntime, Cut][] = [];
          for (const x of disks) {
            try {
              cuts.push([x, await (x.tracker as ChangeTracker).cut()]);
            } catch (err) {
              failures.push([x, err]);
            }
          }
          return cuts;
        });
        for (const [x, cut] of r.value) x.taken = { cut, appConsistent: r.appConsistent };
        if (r.error) {
          for (const [x] of r.value) {
            x.lastError = `${r.error.code}: ${r.error.message}`;
            this.emit({ event: 'freeze-failed', disk: x.spec.name, message: r.error.message });
          }
        }
        for (const [x, err] of failures) await this.trackerFailed(x, err);
      } finally {
        this.round = undefined;
        this.wakeLoops();
      }
    })();
    return this.round;
  }

  /** Ships a cut as segments and commits it after the last ACK. */
  private async shipCut(d: DiskRuntime, transport: Transport, taken: TakenCut, signal: AbortSignal): Promise<void> {
    const name = d.spec.name;
    const { cut, appConsistent } = taken;
    d.lastCutAtMs = cut.capturedAtMs;
    d.sizeBytes = cut.sizeBytes;
    const first = d.state.nextSequence;
    const open: OpenCut = { cut, appConsistent, firstSequence: first, bytes: 0 };
    d.open = open;
    if (cut.full) {
      d.fullPending = true;
      d.shippedBytes = 0;
      d.estimatedBytes = cut.estimatedBytes;
    }
    this.persist(d, { cutId: cut.id, firstSequence: first, capturedAtMs: cut.capturedAtMs, appConsistent, full: cut.full });
    this.emit({ event: 'cut-started', disk: name, cutId: cut.id, full: cut.full, appConsistent, estimatedBytes: cut.estimatedBytes, firstSequence: first });

    const storeDisk = this.storeDisk(name);
    const generation = d.state.generation;
    const pending: Promise<void>[] = [];
    let sendFailure: unknown;
    let sequence = first;
    try {
      for await (const piece of piecesOf(cut.changes(), this.options.maxSegmentBytes ?? MAX_SEGMENT_DATA_BYTES)) {
        await this.whileResumed(signal);
        if (signal.aborted) throw new Stop();
        if (sendFailure !== undefined) throw sendFailure;
        const seq = sequence++;
        if (piece.last) {
          open.lastSequence = seq;
          this.persist(d, { cutId: cut.id, firstSequence: first, lastSequence: seq, capturedAtMs: cut.capturedAtMs, appConsistent, full: cut.full });
        }
        await this.slots.acquire(signal);
        await this.bucket.take(piece.dataBytes, signal);
        if (signal.aborted) {
          this.slots.release();
          throw new Stop();
        }
        const sent = transport
          .sendSegment({
            disk: storeDisk,
            generation,
            sequence: seq,
            flags: pieceFlags(piece, appConsistent),
            diskSizeBytes: cut.sizeBytes,
            capturedAtMs: cut.capturedAtMs,
            extents: piece.extents,
          })
          .then(
            () => {
              d.acked = Math.max(d.acked, seq);
              d.shippedBytes += piece.dataBytes;
              open.bytes += piece.dataBytes;
              if (cut.full) this.emit({ event: 'progress', disk: name, shippedBytes: d.shippedBytes, estimatedBytes: d.estimatedBytes });
            },
            (err: unknown) => {
              if (sendFailure === undefined) sendFailure = err;
            },
          )
          .finally(() => this.slots.release());
        pending.push(sent);
      }
      await Promise.all(pending);
      if (sendFailure !== undefined) throw sendFailure;
    } catch (err) {
      if (this.stopSignal?.aborted) {
        await this.stopCut(d, pending);
        throw new Stop();
      }
      if (err !== sendFailure && !(err instanceof Stop) && !signal.aborted) {
        // The tracker failed while its changes were read: what was sent stays sent (the next cut begins
        // without SEGMENT_CONTINUES, so the processor abandons it); the cut is aborted and the tracker reopened.
        await Promise.allSettled(pending);
        if (sendFailure !== undefined) throw sendFailure;
        d.state = { ...d.state, nextSequence: sequence };
        const e = isLifeboatError(err) ? err : new LifeboatError('TRACKER_FAILED', `disk ${name}: ${(err as Error).message}`, { cause: err });
        d.lastError = `${e.code}: ${e.message}`;
        this.emit({ event: 'disk-error', disk: name, code: e.code, message: e.message });
        d.notBeforeMs = this.clock.now() + this.config.crashConsistentFrequencySeconds * 1000;
        await this.dropCut(d, e);
        return;
      }
      // The connection failed or was reset: the cut stays open; the next WELCOME says whether it arrived whole (recover()).
      throw err;
    }
    await this.finishCut(d);
  }

  /** Everything of the open cut was acknowledged: commit it and persist the numbering. */
  private async finishCut(d: DiskRuntime): Promise<void> {
    const open = d.open as OpenCut;
    const last = open.lastSequence as number;
    await open.cut.commit();
    d.open = undefined;
    // Continuity is the tracker's from here on (a tracker that said `lost` made this cut full, per the contract).
    d.fullPending = false;
    if (d.lastError && (!d.lastError.startsWith('FREEZE_FAILED') || open.appConsistent)) d.lastError = null;
    d.state = {
      ...d.state,
      nextSequence: last + 1,
      inFlight: null,
      lastCommitted: { capturedAtMs: open.cut.capturedAtMs, lastSequence: last, appConsistent: open.appConsistent, full: open.cut.full },
      lastAppConsistentAtMs: open.appConsistent ? open.cut.capturedAtMs : d.state.lastAppConsistentAtMs,
    };
    this.state.saveDiskState(d.spec.name, d.state);
    this.emit({
      event: 'cut-committed',
      disk: d.spec.name,
      cutId: open.cut.id,
      firstSequence: open.firstSequence,
      lastSequence: last,
      bytes: open.bytes,
      full: open.cut.full,
      appConsistent: open.appConsistent,
      capturedAtMs: open.cut.capturedAtMs,
    });
  }

  /** Stopping mid-cut: wait a little for the ACKs in flight; commit if the whole cut arrived, else abort it. */
  private async stopCut(d: DiskRuntime, pending: Promise<void>[]): Promise<void> {
    const open = d.open;
    if (!open) return;
    const grace = new AbortController();
    await Promise.race([Promise.allSettled(pending), this.clock.sleep(this.options.stopGraceMs ?? 10_000, grace.signal)]);
    grace.abort();
    if (open.lastSequence !== undefined && d.acked >= open.lastSequence) {
      await this.finishCut(d);
      return;
    }
    await open.cut.abort();
    d.open = undefined;
    // Segments sent and not acknowledged may still arrive: the next WELCOME renumbers from what the process server holds.
    d.state = { ...d.state, nextSequence: d.acked + 1, inFlight: null };
    this.state.saveDiskState(d.spec.name, d.state);
    this.emit({ event: 'cut-aborted', disk: d.spec.name, cutId: open.cut.id, reason: 'the agent is stopping' });
  }

  private async dropCut(d: DiskRuntime, err: LifeboatError): Promise<void> {
    const open = d.open;
    if (!open) return;
    d.open = undefined;
    await open.cut.abort().catch(() => undefined);
    d.state = { ...d.state, inFlight: null };
    this.state.saveDiskState(d.spec.name, d.state);
    this.emit({ event: 'cut-aborted', disk: d.spec.name, cutId: open.cut.id, reason: err.message });
    await this.reopenTracker(d);
  }

  private async reopenTracker(d: DiskRuntime): Promise<void> {
    await d.tracker?.close().catch(() => undefined);
    d.tracker = undefined;
    try {
      await this.openTracker(d);
    } catch (err) {
      const e = asLifeboatError(err, 'TRACKER_FAILED');
      d.lastError = `${e.code}: ${e.message}`;
      this.emit({ event: 'disk-error', disk: d.spec.name, code: e.code, message: e.message });
    }
    // Whether the next cut is full is the reopened tracker's to say (open()'s continuity): the contract
    // makes a tracker that failed compare the disk again in full.
  }

  private persist(d: DiskRuntime, inFlight: NonNullable<DiskState['inFlight']>): void {
    d.state = { ...d.state, inFlight };
    this.state.saveDiskState(d.spec.name, d.state);
  }

  /** Pause mid-cut: hold the cut open (the tracker keeps tracking) until resumed or stopped. */
  private async whileResumed(signal: AbortSignal): Promise<void> {
    while (this.config.paused && !signal.aborted) await this.clock.sleep(1000, AbortSignal.any([signal, this.wake.signal]));
  }

  /** For `lifeboat agent status` and tests: a snapshot per disk. */
  status(): { connected: boolean; disks: { name: string; storeDisk: string; generation: number; nextSequence: number; acked: number; fenced: boolean; inFlight: DiskState['inFlight'] }[] } {
    return {
      connected: this.connected,
      disks: this.disks.map((d) => ({
        name: d.spec.name,
        storeDisk: this.storeDisk(d.spec.name),
        generation: d.state.generation,
        nextSequence: d.state.nextSequence,
        acked: d.acked,
        fenced: d.fenced,
        inFlight: d.state.inFlight,
      })),
    };
  }
}
