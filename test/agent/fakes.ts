import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock } from '../../src/agent/clock.js';
import type { AgentConfig } from '../../src/agent/config.js';
import type { ConnectRequest, Transport } from '../../src/agent/transport.js';
import type { EnrollRequest, EnrollResponse, HeartbeatReport, VaultClient } from '../../src/agent/vault-client.js';
import { LifeboatError, type ErrorCode } from '../../src/core/errors.js';
import { SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../../src/format/segment.js';
import type { OutgoingSegment, Welcome } from '../../src/protocol/messages.js';

/** Lets promise callbacks and setImmediate work run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

/** A clock that moves only when the test says so; sleepers wake in deadline order. */
export class FakeClock implements Clock {
  t = 1_800_000_000_000;
  private timers: { at: number; resolve: () => void }[] = [];

  now = (): number => this.t;

  sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const onAbort = (): void => {
        this.timers = this.timers.filter((x) => x !== timer);
        resolve();
      };
      const timer = {
        at: this.t + Math.max(0, ms),
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      this.timers.push(timer);
      signal?.addEventListener('abort', onAbort, { once: true });
    });

  /** Moves time forward by `ms`, waking every sleeper due on the way (and letting it run). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (;;) {
      const due = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = Math.max(this.t, due.at);
      due.resolve();
      await settle();
    }
    this.t = end;
    await settle();
  }

  /** Advances in steps until `condition` holds; fails after `maxMs` of fake time. */
  async until(condition: () => boolean, what: string, stepMs = 100, maxMs = 600_000): Promise<void> {
    for (let spent = 0; !condition(); spent += stepMs) {
      if (spent > maxMs) throw new Error(`timed out (fake time) waiting for ${what}`);
      await this.advance(stepMs);
    }
  }
}

/** A clock whose sleep returns at once, moving time forward by what was asked (for the throttle). */
export class AutoClock implements Clock {
  t = 1_800_000_000_000;
  now = (): number => this.t;
  sleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
    if (signal?.aborted) return;
    this.t += Math.max(0, ms);
  };
}

export interface StoredSegment extends OutgoingSegment {
  readonly receivedAtMs: number;
}

type AckMode = 'auto' | 'manual';

/**
 * An in-memory process server with the rules of docs/replication.md: WELCOME
 * with ackedSequence per disk and generation, sequence must be acked + 1,
 * GENERATION_FENCED for old generations, SPOOL_FULL while the spool is full.
 * Manual ACK mode holds ACKs until `releaseAcks()`; faults end connections.
 */
export class FakeProcessServer {
  readonly segments = new Map<string, StoredSegment[]>();
  private readonly acked = new Map<string, number>();
  private readonly currentGeneration = new Map<string, number>();
  readonly connections: FakeTransport[] = [];
  ackMode: AckMode = 'auto';
  spoolFull = false;
  /** Refuse connections (network down). */
  down = false;
  maxInFlight = 0;
  sendTimes: { at: number; bytes: number }[] = [];

  constructor(private readonly clock: () => number = Date.now) {}

  key(disk: string, generation: number): string {
    return `${disk}/${generation}`;
  }

  ackedSequence(disk: string, generation: number): number {
    return this.acked.get(this.key(disk, generation)) ?? 0;
  }

  /** Pretends earlier segments arrived (state left by an earlier agent process). */
  preload(disk: string, generation: number, segments: OutgoingSegment[]): void {
    const list = this.segments.get(this.key(disk, generation)) ?? [];
    for (const s of segments) list.push({ ...s, receivedAtMs: this.clock() });
    this.segments.set(this.key(disk, generation), list);
    this.acked.set(this.key(disk, generation), Math.max(0, ...list.map((s) => s.sequence)));
  }

  fence(disk: string, generation: number): void {
    this.currentGeneration.set(disk, generation);
  }

  stored(disk: string, generation: number): StoredSegment[] {
    return this.segments.get(this.key(disk, generation)) ?? [];
  }

  get current(): FakeTransport | undefined {
    return this.connections.at(-1);
  }

  connect = async (request: ConnectRequest): Promise<Transport> => {
    if (this.down) throw new LifeboatError('SERVER_UNREACHABLE', 'connection refused (fake network down)', { retryable: true });
    for (const d of request.disks) {
      const cur = this.currentGeneration.get(d.disk);
      if (cur !== undefined && d.generation < cur) {
        throw new LifeboatError('GENERATION_FENCED', `disk ${d.disk} generation ${d.generation} is older than ${cur}`, { details: { remote: true, disk: d.disk } });
      }
    }
    const welcome: Welcome = { disks: request.disks.map((d) => ({ ...d, ackedSequence: this.ackedSequence(d.disk, d.generation) })) };
    const t = new FakeTransport(this, welcome, request);
    this.connections.push(t);
    return t;
  };

  /** @internal */
  receive(t: FakeTransport, s: OutgoingSegment): void {
    const k = this.key(s.disk, s.generation);
    const acked = this.acked.get(k) ?? 0;
    const fail = (code: ErrorCode, message: string): void => t.fail(new LifeboatError(code, message, { details: { remote: true, disk: s.disk, sequence: s.sequence } }));
    if (this.spoolFull) return fail('SPOOL_FULL', 'spool full');
    const expected = Math.max(acked, t.highestReceived.get(k) ?? 0) + 1;
    if (s.sequence < expected) return fail('SEQUENCE_REPLAYED', `sequence ${s.sequence} < ${expected}`);
    if (s.sequence > expected) return fail('SEQUENCE_OUT_OF_ORDER', `sequence ${s.sequence} > ${expected}`);
    t.highestReceived.set(k, s.sequence);
    this.sendTimes.push({ at: this.clock(), bytes: s.extents.reduce((n, e) => n + e.data.length, 0) });
  }

  /** @internal The segment is "on disk" (spooled) and acknowledged; one received on a connection that dropped first is not kept. */
  ack(s: OutgoingSegment): void {
    const k = this.key(s.disk, s.generation);
    const list = this.segments.get(k) ?? [];
    list.push({ ...s, extents: s.extents.map((e) => ({ offset: e.offset, data: Buffer.from(e.data) })), receivedAtMs: this.clock() });
    this.segments.set(k, list);
    this.acked.set(k, Math.max(this.acked.get(k) ?? 0, s.sequence));
  }

  /** Manual mode: acknowledges up to `count` held segments of the current connection (all by default). */
  releaseAcks(count = Infinity): number {
    return this.current?.releaseAcks(count) ?? 0;
  }

  /** Cuts the current connection (network failure). */
  drop(): void {
    this.current?.fail(new LifeboatError('SERVER_UNREACHABLE', 'connection reset (fake)', { retryable: true }));
  }
}

export class FakeTransport implements Transport {
  readonly highestReceived = new Map<string, number>();
  private held: { s: OutgoingSegment; resolve: () => void }[] = [];
  private readonly waiting = new Set<(err: LifeboatError) => void>();
  private failure: LifeboatError | undefined;
  private resolveClosed!: (err: LifeboatError | undefined) => void;
  readonly closed: Promise<LifeboatError | undefined>;
  inFlight = 0;
  sent: OutgoingSegment[] = [];

  constructor(
    private readonly server: FakeProcessServer,
    readonly welcome: Welcome,
    readonly request: ConnectRequest,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  sendSegment(s: OutgoingSegment): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    this.sent.push(s);
    this.inFlight++;
    this.server.maxInFlight = Math.max(this.server.maxInFlight, this.inFlight);
    return new Promise<void>((resolve, reject) => {
      const onFail = (err: LifeboatError): void => reject(err);
      this.waiting.add(onFail);
      const done = (): void => {
        if (this.failure) return;
        this.waiting.delete(onFail);
        this.inFlight--;
        this.server.ack(s);
        resolve();
      };
      this.server.receive(this, s);
      if (this.failure) return;
      if (this.server.ackMode === 'auto') queueMicrotask(done);
      else this.held.push({ s, resolve: done });
    });
  }

  releaseAcks(count: number): number {
    let n = 0;
    while (n < count && this.held.length > 0 && !this.failure) {
      this.held.shift()?.resolve();
      n++;
    }
    return n;
  }

  fail(err: LifeboatError): void {
    if (this.failure) return;
    this.failure = err;
    this.held = [];
    for (const w of this.waiting) w(err);
    this.waiting.clear();
    this.resolveClosed(err);
  }

  async close(): Promise<void> {
    if (!this.failure) {
      this.fail(new LifeboatError('SERVER_UNREACHABLE', 'closed', { retryable: true }));
      this.resolveClosed(undefined);
    }
  }
}

/**
 * Applies the stored segments the way the replica processor does: whole cuts
 * only (a cut ends at a segment without SEGMENT_PARTIAL; a segment without
 * SEGMENT_CONTINUES abandons an unfinished cut before it).
 */
export function replay(segments: readonly OutgoingSegment[], sizeBytes: number): { bytes: Buffer; cuts: number; appCuts: number } {
  const bytes = Buffer.alloc(sizeBytes);
  let open: OutgoingSegment[] = [];
  let cuts = 0;
  let appCuts = 0;
  for (const s of [...segments].sort((a, b) => a.sequence - b.sequence)) {
    if ((s.flags & SEGMENT_CONTINUES) === 0) open = [];
    open.push(s);
    if ((s.flags & SEGMENT_PARTIAL) === 0) {
      for (const seg of open) for (const e of seg.extents) e.data.copy(bytes, e.offset);
      cuts++;
      if ((s.flags & SEGMENT_APP_CONSISTENT) !== 0) appCuts++;
      open = [];
    }
  }
  return { bytes, cuts, appCuts };
}

export class FakeVault implements VaultClient {
  config: AgentConfig;
  reports: HeartbeatReport[] = [];
  failing: LifeboatError | undefined;
  enrollRequests: EnrollRequest[] = [];

  constructor(config: AgentConfig) {
    this.config = config;
  }

  async enroll(request: EnrollRequest): Promise<EnrollResponse> {
    this.enrollRequests.push(request);
    throw new LifeboatError('INTERNAL', 'FakeVault.enroll is not used here');
  }

  async heartbeat(_credential: string, report: HeartbeatReport): Promise<AgentConfig> {
    this.reports.push(report);
    if (this.failing) throw this.failing;
    return this.config;
  }

  get lastReport(): HeartbeatReport | undefined {
    return this.reports.at(-1);
  }
}

export const ITEM_ID = 'item-1';

export function agentConfig(overrides: Partial<AgentConfig> = {}): AgentConfig {
  return {
    generation: 1,
    paused: false,
    throttleBytesPerSec: 0,
    crashConsistentFrequencySeconds: 30,
    appConsistentFrequencyMinutes: 0,
    disks: [{ name: 'vda', storeDisk: `${ITEM_ID}.vda` }],
    processServer: { host: '127.0.0.1', port: 9443, serverName: 'ps.test' },
    ...overrides,
  };
}

export function tempDir(prefix: string): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), `lifeboat-${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}
