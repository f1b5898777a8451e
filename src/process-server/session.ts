import type { TLSSocket } from 'node:tls';
import { asLifeboatError, isLifeboatError, LifeboatError } from '../core/errors.js';
import { listSegments } from '../store/journal.js';
import { encodeFrame, FrameDecoder, FrameType, framePrefix, FRAME_TYPE_NAMES, type Frame } from '../protocol/frame.js';
import { MAX_CLOCK_SKEW_MS, parseHello, parsePing, parseSegment, type Hello, type WelcomeDisk } from '../protocol/messages.js';
import type { AgentGrant, ProcessServerBackend, ProcessServerLogger } from './backend.js';
import type { Spool, SpoolEntry } from './spool.js';

/** What a session needs from its server. */
export interface SessionContext {
  readonly spool: Spool;
  readonly backend: ProcessServerBackend;
  readonly logger: ProcessServerLogger;
  readonly now: () => number;
  readonly counters: { bytesIn: number; bytesOut: number; segmentsIn: number };
  /** Makes `session` the one live session of each disk; resolves once the previous owners stopped. */
  claim(session: Session, disks: readonly string[]): Promise<void>;
  release(session: Session): void;
  spooled(entry: SpoolEntry): void;
}

/** Decoded frames waiting for the session, at most; beyond that the socket is paused. */
const MAX_QUEUED_FRAMES = 2;

/** A decoded frame, a decoding error, or the end of the agent's stream: handled in order. */
type Item = { frame: Frame } | { error: LifeboatError } | { end: true };

/** The certificate's machine id (CN `agent-<machineId>`) and serial (lower-case hex, no leading zeros). */
export function peerIdentity(socket: TLSSocket): { machineId: string; serial: string } | undefined {
  const cert = socket.getPeerCertificate();
  const cn = cert?.subject?.CN;
  const name = Array.isArray(cn) ? undefined : cn;
  const m = name === undefined ? null : /^agent-(.+)$/.exec(name);
  if (!m || !cert.serialNumber) return undefined;
  return { machineId: m[1] as string, serial: cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, '') };
}

/**
 * One agent connection: HELLO/WELCOME, then SEGMENTs spooled and acknowledged
 * one at a time, in order. Every rule of docs/replication.md ("Wire protocol")
 * is checked here; a violation is an ERROR frame, then the connection closes,
 * and nothing of the offending message is spooled. Frames are decoded ahead
 * only a little (MAX_QUEUED_FRAMES): a slow spool pauses the socket instead of
 * buffering.
 */
export class Session {
  private readonly decoder = new FrameDecoder();
  private readonly queue: Item[] = [];
  private working = false;
  private current: Promise<void> = Promise.resolve();
  private state: 'hello' | 'ready' | 'closing' = 'hello';
  private grant: AgentGrant | undefined;
  /** Per disk of HELLO: its generation and the highest sequence acknowledged. */
  private readonly disks = new Map<string, { generation: number; acked: number }>();
  private owned = new Set<string>();

  constructor(
    readonly socket: TLSSocket,
    private readonly ctx: SessionContext,
    private readonly identity: { machineId: string; serial: string },
    readonly id: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      try {
        this.decoder.end();
        this.enqueue({ end: true });
      } catch (err) {
        this.enqueue({ error: err as LifeboatError });
      }
    });
    socket.on('error', (err) => {
      ctx.logger.warn({ session: id, machineId: identity.machineId, err: err.message }, 'agent connection error');
      this.close();
    });
    socket.on('close', () => {
      this.state = 'closing';
      this.queue.length = 0;
      ctx.release(this);
    });
  }

  get machineId(): string {
    return this.identity.machineId;
  }

  /** Whether HELLO was accepted and the session is live. */
  get ready(): boolean {
    return this.state === 'ready';
  }

  /** The disks this session is the live session of. */
  get disksOwned(): ReadonlySet<string> {
    return this.owned;
  }

  private onData(chunk: Buffer): void {
    this.ctx.counters.bytesIn += chunk.length;
    if (this.state === 'closing') return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.enqueue({ error: err as LifeboatError });
      return;
    }
    for (const frame of frames) {
      // PING is answered at once, even while a segment is being spooled: it tells the agent we are alive.
      if (frame.type === FrameType.PING && this.state === 'ready') {
        try {
          parsePing(frame);
          this.send(FrameType.PONG, { at: this.ctx.now() });
        } catch (err) {
          this.enqueue({ error: err as LifeboatError });
        }
        continue;
      }
      this.enqueue({ frame });
    }
  }

  private enqueue(item: Item): void {
    if (this.state === 'closing') return;
    this.queue.push(item);
    if (this.queue.length >= MAX_QUEUED_FRAMES) this.socket.pause();
    if (!this.working) this.current = this.work();
  }

  private async work(): Promise<void> {
    this.working = true;
    try {
      while (this.queue.length > 0 && this.state !== 'closing') {
        const item = this.queue.shift() as Item;
        if (this.queue.length < MAX_QUEUED_FRAMES && !this.socket.destroyed) this.socket.resume();
        if ('error' in item) {
          this.refuse(item.error);
          return;
        }
        if ('end' in item) {
          this.close();
          return;
        }
        try {
          await this.handle(item.frame);
        } catch (err) {
          this.refuse(asLifeboatError(err));
          return;
        }
      }
    } finally {
      this.working = false;
    }
  }

  private async handle(frame: Frame): Promise<void> {
    if (this.state === 'hello') {
      if (frame.type !== FrameType.HELLO) throw new LifeboatError('PROTOCOL_INVALID', `the first frame must be HELLO, not ${FRAME_TYPE_NAMES[frame.type]}`);
      await this.hello(parseHello(frame));
      return;
    }
    switch (frame.type) {
      case FrameType.SEGMENT:
        await this.segment(frame);
        return;
      case FrameType.PONG:
        parsePing(frame);
        return;
      default:
        throw new LifeboatError('PROTOCOL_INVALID', `${FRAME_TYPE_NAMES[frame.type]} is not expected from an agent here`);
    }
  }

  private async hello(hello: Hello): Promise<void> {
    if (hello.machineId !== this.identity.machineId) {
      throw new LifeboatError('AGENT_UNAUTHORIZED', `HELLO names machine ${hello.machineId}, the certificate machine ${this.identity.machineId}`);
    }
    const grant = await this.ctx.backend.authorize({ machineId: this.identity.machineId, certificateSerial: this.identity.serial });
    if (grant.machineId !== this.identity.machineId) throw new LifeboatError('INTERNAL', 'the vault granted another machine than it was asked about');
    for (const d of hello.disks) {
      if (!grant.disks.includes(d.disk)) throw new LifeboatError('AGENT_UNAUTHORIZED', `disk ${d.disk} is not a disk of machine ${grant.machineId}`, { details: { disk: d.disk } });
      if (d.generation < grant.generation || this.ctx.spool.isFenced(d.disk, d.generation)) {
        throw new LifeboatError('GENERATION_FENCED', `generation ${d.generation} of disk ${d.disk} is fenced (the item is at generation ${grant.generation})`, {
          details: { disk: d.disk, generation: d.generation, current: grant.generation },
        });
      }
      if (d.generation > grant.generation) {
        throw new LifeboatError('PROTOCOL_INVALID', `generation ${d.generation} of disk ${d.disk} is newer than the item's (${grant.generation})`, { details: { disk: d.disk } });
      }
    }
    const skew = hello.clockMs - this.ctx.now();
    if (Math.abs(skew) > MAX_CLOCK_SKEW_MS) {
      throw new LifeboatError('CLOCK_SKEW', `the agent's clock (${new Date(hello.clockMs).toISOString()}) is ${Math.round(skew / 1000)} s from the process server's (${new Date(this.ctx.now()).toISOString()})`, {
        details: { agentMs: hello.clockMs, serverMs: this.ctx.now() },
      });
    }
    this.grant = grant;
    // A second HELLO for a disk replaces the session that had it: the old one stops (its segment under way finishes) first.
    await this.ctx.claim(
      this,
      hello.disks.map((d) => d.disk),
    );
    if (this.state === 'closing') return;
    this.owned = new Set(hello.disks.map((d) => d.disk));
    const welcome: WelcomeDisk[] = [];
    for (const d of hello.disks) {
      await this.ctx.spool.bindVault(d.disk, grant.vaultId);
      const acked = await this.ackedSequence(d.disk, d.generation, grant.vaultId);
      this.disks.set(d.disk, { generation: d.generation, acked });
      welcome.push({ disk: d.disk, generation: d.generation, ackedSequence: acked });
    }
    this.state = 'ready';
    this.send(FrameType.WELCOME, { disks: welcome });
    this.ctx.logger.info({ session: this.id, machineId: grant.machineId, itemId: grant.itemId, disks: welcome }, 'agent connected');
  }

  /**
   * The spool's `acked` when it has one; else (a new or lost spool) the
   * highest sequence of the generation the store holds, recorded in the spool.
   */
  private async ackedSequence(disk: string, generation: number, vaultId: string): Promise<number> {
    const spooled = this.ctx.spool.ackedSequence(disk, generation);
    if (spooled !== undefined) return spooled;
    const repo = await this.ctx.backend.repository(vaultId);
    let stored = 0;
    for (const s of await listSegments(repo, disk, generation)) stored = Math.max(stored, s.sequence);
    const latest = await repo.latestPoint(disk);
    if (latest && latest.source.generation === generation) stored = Math.max(stored, latest.source.lastSequence);
    if (stored > 0) await this.ctx.spool.setAcked(disk, generation, stored);
    return stored;
  }

  private async segment(frame: Frame): Promise<void> {
    const seg = parseSegment(frame);
    const disk = this.disks.get(seg.disk);
    if (!disk || !this.owned.has(seg.disk)) throw new LifeboatError('PROTOCOL_INVALID', `disk ${seg.disk} was not announced in HELLO`, { details: { disk: seg.disk, sequence: seg.sequence } });
    const where = { disk: seg.disk, sequence: seg.sequence };
    if (seg.generation !== disk.generation) {
      throw new LifeboatError('PROTOCOL_INVALID', `segment ${seg.sequence} of disk ${seg.disk} is of generation ${seg.generation}, HELLO said ${disk.generation}`, { details: where });
    }
    if (this.ctx.spool.isFenced(seg.disk, seg.generation)) {
      throw new LifeboatError('GENERATION_FENCED', `generation ${seg.generation} of disk ${seg.disk} is fenced`, { details: where });
    }
    if (seg.sequence <= disk.acked) {
      throw new LifeboatError('SEQUENCE_REPLAYED', `segment ${seg.sequence} of disk ${seg.disk} was acknowledged already (up to ${disk.acked})`, { details: where });
    }
    if (seg.sequence !== disk.acked + 1) {
      throw new LifeboatError('SEQUENCE_OUT_OF_ORDER', `segment ${seg.sequence} of disk ${seg.disk} skips ahead; expected ${disk.acked + 1}`, { details: where });
    }
    const raw = [framePrefix(FrameType.SEGMENT, frame.headerBytes.length, frame.body.length), frame.headerBytes, frame.body];
    let entry: SpoolEntry;
    try {
      entry = await this.ctx.spool.put(seg.disk, seg.generation, seg.sequence, raw, this.ctx.now());
    } catch (err) {
      if (isLifeboatError(err)) Object.assign(err.details, where);
      throw err;
    }
    disk.acked = seg.sequence;
    this.ctx.counters.segmentsIn++;
    this.ctx.spooled(entry);
    this.send(FrameType.ACK, { disk: seg.disk, generation: seg.generation, sequence: seg.sequence });
  }

  private send(type: FrameType, header: Record<string, unknown>): void {
    if (this.socket.destroyed) return;
    const parts = encodeFrame(type, header);
    for (const p of parts) {
      this.ctx.counters.bytesOut += p.length;
      this.socket.write(p);
    }
  }

  /** Sends ERROR for `err` and closes the connection. */
  private refuse(err: LifeboatError): void {
    if (this.state === 'closing') return;
    const known = err.code !== 'INTERNAL';
    const disk = typeof err.details.disk === 'string' ? err.details.disk : undefined;
    const sequence = typeof err.details.sequence === 'number' ? err.details.sequence : undefined;
    const level = err.code === 'SPOOL_FULL' || err.code === 'STORAGE_UNAVAILABLE' ? 'warn' : 'error';
    this.ctx.logger[level]({ session: this.id, machineId: this.identity.machineId, code: err.code, err: err.message, disk, sequence }, 'agent refused');
    this.send(FrameType.ERROR, {
      code: err.code,
      message: known ? err.message : 'internal error in the process server',
      ...(disk === undefined ? {} : { disk }),
      ...(sequence === undefined ? {} : { sequence }),
    });
    this.close();
  }

  /**
   * Ends the connection once the written frames are out. What the agent still
   * sends is read and dropped (not buffered): closing with unread data would
   * reset the connection and lose the ERROR frame on its way.
   */
  close(): void {
    if (this.state === 'closing') return;
    this.state = 'closing';
    this.queue.length = 0;
    this.socket.resume();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** Closes this session because another took over `disk`; resolves once its segment under way is done. */
  async replaced(disk: string): Promise<void> {
    if (this.state !== 'closing') {
      this.state = 'closing';
      this.queue.length = 0;
      await this.current.catch(() => undefined);
      this.socket.resume();
      this.send(FrameType.ERROR, { code: 'CONFLICT', message: `a newer connection took over disk ${disk}`, disk });
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 2000).unref();
    } else {
      await this.current.catch(() => undefined);
    }
  }
}
