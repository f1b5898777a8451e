import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { isIP } from 'node:net';
import { ERROR_CODES, LifeboatError, type ErrorCode } from '../core/errors.js';
import { encodeFrame, FrameDecoder, FrameType, FRAME_TYPE_NAMES, type Frame } from './frame.js';
import {
  DEFAULT_WINDOW,
  parseAck,
  parseError,
  parsePing,
  parseWelcome,
  PROTOCOL_VERSION,
  segmentFrameParts,
  type Ack,
  type DiskGeneration,
  type OutgoingSegment,
  type Welcome,
  type WelcomeDisk,
} from './messages.js';

export interface ReplicationClientOptions {
  readonly host: string;
  readonly port: number;
  /** The name the process server's certificate is checked against (AgentConfig.processServer.serverName); default: host unless it is an IP address. */
  readonly servername?: string;
  /** The agent's certificate and key, and the vault CA that issued the process server's certificate. */
  readonly tls: { readonly certPem: string; readonly keyPem: string; readonly caPem: string };
  readonly machineId: string;
  /** The store disks this connection carries, each with the agent's generation. */
  readonly disks: readonly DiskGeneration[];
  /** Segments sent and not yet acknowledged, at most (default 8). */
  readonly window?: number;
  /** A PING is sent this often (default 10 s). */
  readonly pingIntervalMs?: number;
  /** Nothing heard from the process server (no PONG, no frame) for this long: the connection is closed as dead (default 30 s). */
  readonly deadPeerTimeoutMs?: number;
  /** TCP + TLS + HELLO/WELCOME must finish within this (default 15 s). */
  readonly connectTimeoutMs?: number;
  /** The clock HELLO and PING carry (ms since the epoch; default Date.now). */
  readonly now?: () => number;
}

interface Pending {
  readonly resolve: (ack: Ack) => void;
  readonly reject: (err: LifeboatError) => void;
}

/** TLS alerts by which the process server refuses the agent's certificate. */
const REFUSED_CERT = /ALERT_(CERTIFICATE_REQUIRED|UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|DECRYPT_ERROR)/;
/** Verification failures of the process server's own certificate. */
const UNTRUSTED_SERVER = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** Maps a socket or TLS error to the LifeboatError an agent acts on. */
export function connectionError(err: unknown, where: string): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? '';
  if (REFUSED_CERT.test(code)) {
    return new LifeboatError('AGENT_UNAUTHORIZED', `the process server at ${where} refused the agent certificate (${code})`, { cause: err, details: { tls: code } });
  }
  if (UNTRUSTED_SERVER.has(code)) {
    return new LifeboatError('SERVER_UNREACHABLE', `the certificate of the process server at ${where} is not trusted (${code})`, {
      cause: err,
      retryable: false,
      details: { tls: code },
    });
  }
  return new LifeboatError('SERVER_UNREACHABLE', `connection to the process server at ${where} failed: ${e?.message ?? String(err)}`, {
    cause: err,
    retryable: true,
    details: { errno: code },
  });
}

/** An ERROR frame as the LifeboatError of its code (unknown codes become INTERNAL with the remote code in details). */
export function remoteError(frame: Frame): LifeboatError {
  const msg = parseError(frame);
  const known = msg.code in ERROR_CODES;
  const code: ErrorCode = known ? (msg.code as ErrorCode) : 'INTERNAL';
  return new LifeboatError(code, `process server: ${msg.message}`, {
    details: { remote: true, remoteCode: msg.code, ...(msg.disk === undefined ? {} : { disk: msg.disk }), ...(msg.sequence === undefined ? {} : { sequence: msg.sequence }) },
  });
}

const key = (disk: string, generation: number, sequence: number): string => `${disk}/${generation}/${sequence}`;

/**
 * The agent's side of one replication connection. connect() resolves after
 * WELCOME; sendSegment() resolves on the segment's ACK (the segment is then on
 * the process server's disk) and waits while `window` segments are in flight.
 *
 * Failure ends the connection: an ERROR frame from the process server rejects
 * every pending send with a LifeboatError of the remote code; a lost or dead
 * peer rejects them with SERVER_UNREACHABLE (retryable). A closed client is not
 * reused: connect again and resume from WELCOME's ackedSequence.
 */
export class ReplicationClient {
  private readonly pending = new Map<string, Pending>();
  private readonly slotWaiters: (() => void)[] = [];
  private readonly decoder = new FrameDecoder();
  private readonly window: number;
  private readonly now: () => number;
  private readonly where: string;
  private readonly disks: Map<string, number>;
  private pingTimer: NodeJS.Timeout | undefined;
  private lastHeardMs = performance.now();
  private failure: LifeboatError | undefined;
  private onWelcome: ((w: Welcome) => void) | undefined;
  private closing = false;
  private readonly closedPromise: Promise<LifeboatError | undefined>;
  private resolveClosed: (err: LifeboatError | undefined) => void = () => {};
  /** What the process server answered to HELLO. */
  welcome: Welcome = { disks: [] };

  private constructor(
    private readonly socket: TLSSocket,
    private readonly options: ReplicationClientOptions,
  ) {
    this.window = options.window ?? DEFAULT_WINDOW;
    this.now = options.now ?? Date.now;
    this.where = `${options.host}:${options.port}`;
    this.disks = new Map(options.disks.map((d) => [d.disk, d.generation]));
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Connects, says HELLO and waits for WELCOME. */
  static async connect(options: ReplicationClientOptions): Promise<ReplicationClient> {
    const window = options.window ?? DEFAULT_WINDOW;
    if (!Number.isInteger(window) || window < 1) throw new LifeboatError('USAGE', 'the window must be a positive integer');
    const servername = options.servername ?? (isIP(options.host) ? undefined : options.host);
    const socket = tlsConnect({
      host: options.host,
      port: options.port,
      ...(servername === undefined ? {} : { servername }),
      cert: options.tls.certPem,
      key: options.tls.keyPem,
      ca: options.tls.caPem,
      minVersion: 'TLSv1.3',
    });
    const client = new ReplicationClient(socket, options);
    return client.handshake(options.connectTimeoutMs ?? 15_000);
  }

  private handshake(timeoutMs: number): Promise<ReplicationClient> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new LifeboatError('SERVER_UNREACHABLE', `no WELCOME from ${this.where} within ${timeoutMs} ms`, { retryable: true })), timeoutMs);
      void this.closedPromise.then((err) => {
        clearTimeout(timer);
        reject(err ?? new LifeboatError('SERVER_UNREACHABLE', `the connection to ${this.where} closed before WELCOME`, { retryable: true }));
      });
      this.onWelcome = (welcome) => {
        clearTimeout(timer);
        this.welcome = welcome;
        this.startPings();
        resolve(this);
      };
      this.socket.setNoDelay(true);
      this.socket.on('secureConnect', () => {
        this.write(FrameType.HELLO, { protocol: PROTOCOL_VERSION, machineId: this.options.machineId, disks: this.options.disks, clockMs: this.now() });
      });
      this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
      this.socket.on('error', (err) => this.fail(connectionError(err, this.where)));
      this.socket.on('end', () => {
        try {
          this.decoder.end();
        } catch (err) {
          this.fail(err as LifeboatError);
        }
      });
      this.socket.on('close', () =>
        this.fail(new LifeboatError('SERVER_UNREACHABLE', `the process server at ${this.where} closed the connection`, { retryable: true })),
      );
    });
  }

  /** The highest sequence the process server acknowledged for `disk` (as of WELCOME, then of every ACK). */
  ackedSequence(disk: string): number {
    return this.welcome.disks.find((d) => d.disk === disk)?.ackedSequence ?? 0;
  }

  /** Segments sent and not yet acknowledged. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Resolves when the connection has ended: with the error that ended it, or undefined after close(). */
  get closed(): Promise<LifeboatError | undefined> {
    return this.closedPromise;
  }

  /**
   * Sends one segment and resolves on its ACK. Waits first while the window is
   * full. The segment's disk and generation must be those of HELLO.
   */
  async sendSegment(segment: OutgoingSegment): Promise<Ack> {
    if (this.disks.get(segment.disk) !== segment.generation) {
      throw new LifeboatError('USAGE', `disk ${segment.disk} generation ${segment.generation} was not announced in HELLO`);
    }
    const { header, body } = segmentFrameParts(segment);
    while (!this.failure && this.pending.size >= this.window) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    if (this.failure) throw this.failure;
    const k = key(segment.disk, segment.generation, segment.sequence);
    if (this.pending.has(k)) throw new LifeboatError('USAGE', `segment ${k} is already in flight`);
    return new Promise<Ack>((resolve, reject) => {
      this.pending.set(k, { resolve, reject });
      this.write(FrameType.SEGMENT, header as unknown as Record<string, unknown>, body);
    });
  }

  /** Ends the connection. Segments still in flight are rejected (retryable: send them again on the next connection). */
  async close(): Promise<void> {
    if (!this.failure) {
      this.closing = true;
      this.fail(new LifeboatError('SERVER_UNREACHABLE', 'the replication client was closed', { retryable: true }), false);
      this.socket.end();
      const timer = setTimeout(() => this.socket.destroy(), 2000);
      timer.unref();
    }
    await new Promise<void>((resolve) => (this.socket.closed ? resolve() : this.socket.once('close', () => resolve())));
  }

  private write(type: FrameType, header: Record<string, unknown>, body?: Buffer): void {
    if (this.failure || this.socket.destroyed) return;
    const parts = encodeFrame(type, header, body);
    this.socket.cork();
    for (const p of parts) this.socket.write(p);
    this.socket.uncork();
  }

  private startPings(): void {
    const interval = this.options.pingIntervalMs ?? 10_000;
    const dead = this.options.deadPeerTimeoutMs ?? 30_000;
    this.lastHeardMs = performance.now();
    this.pingTimer = setInterval(
      () => {
        const silentMs = performance.now() - this.lastHeardMs;
        if (silentMs > dead) {
          this.fail(new LifeboatError('SERVER_UNREACHABLE', `the process server at ${this.where} did not answer for ${Math.round(silentMs)} ms`, { retryable: true }));
          return;
        }
        this.write(FrameType.PING, { at: this.now() });
      },
      Math.max(10, Math.min(interval, dead / 2)),
    );
    this.pingTimer.unref();
  }

  private onData(chunk: Buffer): void {
    this.lastHeardMs = performance.now();
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.fail(err as LifeboatError);
      return;
    }
    for (const frame of frames) {
      if (this.failure) return;
      try {
        this.onFrame(frame);
      } catch (err) {
        this.fail(err instanceof LifeboatError ? err : new LifeboatError('PROTOCOL_INVALID', String(err)));
      }
    }
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      case FrameType.WELCOME: {
        if (!this.onWelcome) throw new LifeboatError('PROTOCOL_INVALID', 'a second WELCOME');
        const welcome = parseWelcome(frame);
        for (const d of this.options.disks) {
          const w = welcome.disks.find((x) => x.disk === d.disk);
          if (!w || w.generation !== d.generation) throw new LifeboatError('PROTOCOL_INVALID', `WELCOME does not answer for disk ${d.disk} generation ${d.generation}`);
        }
        const onWelcome = this.onWelcome;
        this.onWelcome = undefined;
        onWelcome(welcome);
        return;
      }
      case FrameType.ACK: {
        const ack = parseAck(frame);
        const k = key(ack.disk, ack.generation, ack.sequence);
        const p = this.pending.get(k);
        if (!p) throw new LifeboatError('PROTOCOL_INVALID', `an ACK for ${k}, which is not in flight`);
        this.pending.delete(k);
        this.welcome = {
          disks: this.welcome.disks.map((d): WelcomeDisk => (d.disk === ack.disk && d.generation === ack.generation ? { ...d, ackedSequence: Math.max(d.ackedSequence, ack.sequence) } : d)),
        };
        p.resolve(ack);
        this.slotWaiters.shift()?.();
        return;
      }
      case FrameType.ERROR:
        this.fail(remoteError(frame));
        return;
      case FrameType.PING:
        parsePing(frame);
        this.write(FrameType.PONG, { at: this.now() });
        return;
      case FrameType.PONG:
        parsePing(frame);
        return;
      default:
        throw new LifeboatError('PROTOCOL_INVALID', `the process server sent ${FRAME_TYPE_NAMES[frame.type]}, which only agents send`);
    }
  }

  private fail(err: LifeboatError, destroy = true): void {
    if (this.failure) return;
    this.failure = err;
    if (this.pingTimer) clearInterval(this.pingTimer);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const wake of this.slotWaiters.splice(0)) wake();
    if (destroy) this.socket.destroy();
    this.resolveClosed(this.closing ? undefined : err);
  }
}
