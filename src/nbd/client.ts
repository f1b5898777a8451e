/**
 * An NBD client (NetworkBlockDevice/nbd doc/proto.md): fixed newstyle
 * negotiation, NBD_OPT_GO, structured replies, meta contexts, READ,
 * BLOCK_STATUS, and WRITE/FLUSH for writable exports, over a Unix socket or TCP. It reads QEMU's point-in-time views
 * (qemu:dirty-bitmap:NAME, base:allocation) for the qemu change tracker, and
 * talks to our own server in tests.
 *
 * Contracts:
 * - Requests are pipelined: every call sends at once and replies are matched by
 *   cookie, in whatever order the server answers.
 * - A broken protocol (bad magic, unknown cookie, malformed chunk, a reply that
 *   does not cover a read) or a request without an answer within `timeoutMs`
 *   ends the connection: every pending and later call rejects with
 *   LifeboatError('NBD_PROTOCOL'). Connecting and negotiating are bounded by
 *   the same timeout.
 * - An error the server reports for one request (EIO on a read...) rejects that
 *   call with SOURCE_UNREADABLE and keeps the connection usable.
 * - An export the server does not know is NOT_FOUND; a requested meta context
 *   the server does not offer is NBD_PROTOCOL (the caller asked for something
 *   it relies on).
 * - close() waits for pending requests, sends NBD_CMD_DISC and ends the
 *   socket; it is idempotent.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { BlockSource, Extent } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';
import {
  BASE_ALLOCATION,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLUSH,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_MAGIC,
  REQUEST_HEADER_BYTES,
} from './protocol.js';

/** Chunk types the server side never sends, so protocol.ts does not name them. */
const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;
/** Error chunk types all have bit 15 set. */
const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
/** Oldstyle servers send this where newstyle ones send IHAVEOPT. */
const NBD_OLDSTYLE_MAGIC = 0x00420281861253n;

const OPTION_REPLY_HEADER_BYTES = 20;
const SIMPLE_REPLY_HEADER_BYTES = 16;
const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** Larger option replies or chunk headers announcing more than this are treated as a broken server. */
const MAX_OPTION_REPLY_BYTES = 1024 * 1024;
/** Default largest request when the server states no maximum block size (the protocol's safe value). */
const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** One BLOCK_STATUS request asks about at most this much; the caller's loop asks again. */
const MAX_STATUS_REQUEST_BYTES = 1 << 30;
/** Longest BLOCK_STATUS chunk we accept (a million descriptors). */
const MAX_STATUS_CHUNK_BYTES = 8 * 1024 * 1024 + 4;

export type NbdTarget = { readonly socketPath: string } | { readonly host: string; readonly port: number };

export interface NbdClientOptions {
  readonly target: NbdTarget;
  readonly exportName: string;
  /** Meta contexts to select, e.g. 'base:allocation', 'qemu:dirty-bitmap:bm0'. Needs structured replies. */
  readonly metaContexts?: readonly string[];
  /** Deadline for connect + negotiation, and for each request's reply. Default 30 s. */
  readonly timeoutMs?: number;
}

/** One BLOCK_STATUS descriptor, placed on the disk. `flags` mean what the context defines. */
export interface NbdStatusExtent {
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
}

/** What negotiation agreed on. */
export interface NbdExportInfo {
  readonly exportName: string;
  readonly sizeBytes: number;
  readonly transmissionFlags: number;
  readonly readOnly: boolean;
  readonly structuredReplies: boolean;
  /** Selected meta contexts by name -> the server's id. */
  readonly metaContexts: ReadonlyMap<string, number>;
  readonly minimumBlockBytes: number;
  readonly preferredBlockBytes: number;
  readonly maximumBlockBytes: number;
}

function protocolError(message: string, details: Record<string, unknown> = {}, cause?: unknown): LifeboatError {
  return new LifeboatError('NBD_PROTOCOL', message, cause === undefined ? { details } : { details, cause });
}

/** Buffers socket data and hands out exact byte counts, in order, to one reader at a time. */
class Inbox {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { bytes: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  push(data: Buffer): void {
    this.chunks.push(data);
    this.buffered += data.length;
    const waiter = this.waiter;
    if (waiter !== null && this.buffered >= waiter.bytes) {
      this.waiter = null;
      waiter.resolve(this.take(waiter.bytes));
    }
  }

  fail(err: Error): void {
    this.failure ??= err;
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(this.failure);
  }

  read(bytes: number): Promise<Buffer> {
    if (this.buffered >= bytes) return Promise.resolve(this.take(bytes));
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { bytes, resolve, reject };
    });
  }

  private take(bytes: number): Buffer {
    if (bytes === 0) return Buffer.alloc(0);
    const first = this.chunks[0] as Buffer;
    if (first.length >= bytes) {
      const out = first.subarray(0, bytes);
      if (first.length === bytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(bytes);
      this.buffered -= bytes;
      return out;
    }
    const out = Buffer.allocUnsafe(bytes);
    let at = 0;
    while (at < bytes) {
      const chunk = this.chunks[0] as Buffer;
      const n = Math.min(chunk.length, bytes - at);
      chunk.copy(out, at, 0, n);
      at += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    this.buffered -= bytes;
    return out;
  }
}

interface PendingBase {
  readonly cookie: bigint;
  readonly offset: number;
  readonly length: number;
  readonly timer: NodeJS.Timeout;
  /** First error chunk the server sent for this request. */
  serverError: { errno: number; message: string } | null;
}

interface PendingRead extends PendingBase {
  readonly kind: 'read';
  readonly data: Buffer;
  covered: number;
  readonly resolve: (data: Buffer) => void;
  readonly reject: (err: Error) => void;
}

interface PendingStatus extends PendingBase {
  readonly kind: 'status';
  readonly contextId: number;
  extents: NbdStatusExtent[] | null;
  readonly resolve: (extents: NbdStatusExtent[]) => void;
  readonly reject: (err: Error) => void;
}

/** A command answered with success or an error only (WRITE, FLUSH). */
interface PendingAck extends PendingBase {
  readonly kind: 'ack';
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

type Pending = PendingRead | PendingStatus | PendingAck;

export class NbdClient {
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private failure: LifeboatError | null = null;
  private closing: Promise<void> | null = null;
  private readonly replyLoopDone: Promise<void>;
  /** close() waits here until no request is pending. */
  private idleWaiters: Array<() => void> = [];

  private constructor(
    private readonly socket: Socket,
    private readonly inbox: Inbox,
    readonly info: NbdExportInfo,
    private readonly timeoutMs: number,
  ) {
    this.replyLoopDone = this.replyLoop();
    socket.on('close', () => this.fail(protocolError('NBD server closed the connection', { exportName: info.exportName })));
  }

  /** Connects, negotiates and enters transmission. Rejects with NBD_PROTOCOL, NOT_FOUND (unknown export). */
  static async connect(options: NbdClientOptions): Promise<NbdClient> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const inbox = new Inbox();
    const socket = await openSocket(options.target, timeoutMs);
    socket.on('data', (d: Buffer) => inbox.push(d));
    socket.on('error', (err) => inbox.fail(protocolError(`NBD connection failed: ${err.message}`, {}, err)));
    socket.on('close', () => inbox.fail(protocolError('NBD server closed the connection')));
    const timer = setTimeout(() => {
      inbox.fail(protocolError(`NBD negotiation did not finish within ${timeoutMs} ms`, { exportName: options.exportName }));
      socket.destroy();
    }, timeoutMs);
    try {
      const info = await negotiate(socket, inbox, options);
      return new NbdClient(socket, inbox, info, timeoutMs);
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get sizeBytes(): number {
    return this.info.sizeBytes;
  }

  /**
   * Reads exactly `length` bytes at `offset` (inside the export). Longer reads
   * are split into pipelined requests of at most the server's maximum block size.
   */
  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const max = this.info.maximumBlockBytes;
    if (length <= max) return this.readOne(offset, length);
    const parts: Array<Promise<Buffer>> = [];
    for (let at = 0; at < length; at += max) parts.push(this.readOne(offset + at, Math.min(max, length - at)));
    return Buffer.concat(await Promise.all(parts), length);
  }

  /**
   * One BLOCK_STATUS request for `context`: extents that start at `offset` and
   * cover a non-empty part of [offset, offset+length), clipped to that range.
   */
  async blockStatus(context: string, offset: number, length: number, options: { one?: boolean } = {}): Promise<NbdStatusExtent[]> {
    const contextId = this.info.metaContexts.get(context);
    if (contextId === undefined) {
      throw protocolError(`meta context ${context} was not negotiated on this connection`, { context });
    }
    this.checkRange(offset, length);
    if (length === 0) return [];
    const request = Math.min(length, MAX_STATUS_REQUEST_BYTES);
    return new Promise<NbdStatusExtent[]>((resolve, reject) => {
      const cookie = this.send(NBD_CMD_BLOCK_STATUS, options.one ? NBD_CMD_FLAG_REQ_ONE : 0, offset, request);
      if (cookie === null) return reject(this.failure as LifeboatError);
      this.pending.set(cookie, {
        kind: 'status',
        cookie,
        offset,
        length: request,
        contextId,
        extents: null,
        serverError: null,
        timer: this.requestTimer(cookie),
        resolve,
        reject,
      });
    });
  }

  /** Extents of `context` covering [offset, offset+length) exactly, asking as often as the server needs. */
  async extents(context: string, offset = 0, length = this.info.sizeBytes - offset): Promise<NbdStatusExtent[]> {
    const out: NbdStatusExtent[] = [];
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const got = await this.blockStatus(context, at, end - at);
      for (const e of got) {
        const last = out[out.length - 1];
        if (last !== undefined && last.flags === e.flags && last.offset + last.length === e.offset) {
          out[out.length - 1] = { offset: last.offset, length: last.length + e.length, flags: last.flags };
        } else {
          out.push(e);
        }
        at = e.offset + e.length;
      }
    }
    return out;
  }

  /** Writes `data` at `offset` (the export must be writable; the server's error is SOURCE_UNREADABLE). */
  async write(offset: number, data: Buffer): Promise<void> {
    this.checkRange(offset, data.length);
    if (this.info.readOnly) throw new LifeboatError('USAGE', 'the NBD export is read-only', { details: { exportName: this.info.exportName } });
    const max = this.info.maximumBlockBytes;
    const parts: Array<Promise<void>> = [];
    for (let at = 0; at < data.length; at += max) {
      parts.push(this.ack(NBD_CMD_WRITE, offset + at, Math.min(max, data.length - at), data.subarray(at, at + max)));
    }
    await Promise.all(parts);
  }

  /** Asks the server to make completed writes durable. */
  flush(): Promise<void> {
    return this.ack(NBD_CMD_FLUSH, 0, 0);
  }

  /** Waits for pending requests, says goodbye (NBD_CMD_DISC) and closes the socket. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.pending.size > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      if (this.failure === null && !this.socket.destroyed) {
        this.send(NBD_CMD_DISC, 0, 0, 0);
        this.failure = protocolError('NBD client is closed', { exportName: this.info.exportName });
        const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
        this.socket.end();
        const timer = setTimeout(() => this.socket.destroy(), this.timeoutMs);
        await closed;
        clearTimeout(timer);
      }
      this.failure ??= protocolError('NBD client is closed', { exportName: this.info.exportName });
      this.socket.destroy();
      this.inbox.fail(this.failure);
      await this.replyLoopDone;
    })();
    return this.closing;
  }

  private ack(type: number, offset: number, length: number, payload?: Buffer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cookie = this.send(type, 0, offset, length, payload);
      if (cookie === null) return reject(this.failure as LifeboatError);
      this.pending.set(cookie, { kind: 'ack', cookie, offset, length, serverError: null, timer: this.requestTimer(cookie), resolve, reject });
    });
  }

  private readOne(offset: number, length: number): Promise<Buffer> {
    if (length === 0) return Promise.resolve(Buffer.alloc(0));
    return new Promise<Buffer>((resolve, reject) => {
      const cookie = this.send(NBD_CMD_READ, 0, offset, length);
      if (cookie === null) return reject(this.failure as LifeboatError);
      this.pending.set(cookie, {
        kind: 'read',
        cookie,
        offset,
        length,
        data: Buffer.alloc(length),
        covered: 0,
        serverError: null,
        timer: this.requestTimer(cookie),
        resolve,
        reject,
      });
    });
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.info.sizeBytes) {
      throw new LifeboatError('USAGE', 'NBD request lies outside the export', {
        details: { offset, length, sizeBytes: this.info.sizeBytes },
      });
    }
  }

  /** Writes one request header; null when the connection is already gone. */
  private send(type: number, flags: number, offset: number, length: number, payload?: Buffer): bigint | null {
    if (this.failure !== null) return null;
    const cookie = this.nextCookie++;
    const header = Buffer.alloc(REQUEST_HEADER_BYTES);
    header.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(cookie, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    this.socket.write(payload === undefined ? header : Buffer.concat([header, payload]));
    return cookie;
  }

  private requestTimer(cookie: bigint): NodeJS.Timeout {
    return setTimeout(() => {
      const p = this.pending.get(cookie);
      this.fail(
        protocolError(`NBD server did not answer within ${this.timeoutMs} ms`, {
          exportName: this.info.exportName,
          offset: p?.offset,
          length: p?.length,
        }),
      );
    }, this.timeoutMs);
  }

  /** Ends the connection: every pending and later request rejects with `err`. */
  private fail(err: LifeboatError): void {
    this.failure ??= err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
    this.pending.clear();
    this.notifyIdle();
    this.inbox.fail(this.failure);
    this.socket.destroy();
  }

  private async replyLoop(): Promise<void> {
    try {
      while (true) {
        const magic = (await this.inbox.read(4)).readUInt32BE(0);
        if (magic === NBD_SIMPLE_REPLY_MAGIC) await this.simpleReply();
        else if (magic === NBD_STRUCTURED_REPLY_MAGIC && this.info.structuredReplies) await this.structuredChunk();
        else throw protocolError('NBD reply has a bad magic', { magic: magic.toString(16) });
      }
    } catch (err) {
      this.fail(err instanceof LifeboatError ? err : protocolError('NBD reply could not be read', {}, err));
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (p === undefined) throw protocolError('NBD reply for a request that is not pending', { cookie: cookie.toString() });
    return p;
  }

  private finish(p: Pending): void {
    if (p.serverError === null && p.kind === 'read' && p.covered !== p.length) {
      throw protocolError('NBD read reply does not cover the request', { offset: p.offset, length: p.length, covered: p.covered });
    }
    if (p.serverError === null && p.kind === 'status' && (p.extents === null || p.extents.length === 0)) {
      throw protocolError('NBD block status reply has no extents for the context', { offset: p.offset, length: p.length });
    }
    this.pending.delete(p.cookie);
    clearTimeout(p.timer);
    if (p.serverError !== null) {
      p.reject(
        new LifeboatError('SOURCE_UNREADABLE', `NBD server failed the request: ${p.serverError.message || `errno ${p.serverError.errno}`}`, {
          details: { exportName: this.info.exportName, offset: p.offset, length: p.length, errno: p.serverError.errno },
        }),
      );
    } else if (p.kind === 'read') {
      p.resolve(p.data);
    } else if (p.kind === 'status') {
      p.resolve(p.extents as NbdStatusExtent[]);
    } else {
      p.resolve();
    }
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.pending.size > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async simpleReply(): Promise<void> {
    const rest = await this.inbox.read(SIMPLE_REPLY_HEADER_BYTES - 4);
    const errno = rest.readUInt32BE(0);
    const p = this.take(rest.readBigUInt64BE(4));
    if (errno !== 0) {
      p.serverError = { errno, message: '' };
    } else if (p.kind === 'read') {
      (await this.inbox.read(p.length)).copy(p.data);
      p.covered = p.length;
    } else if (p.kind === 'status') {
      throw protocolError('NBD server sent a simple reply to BLOCK_STATUS');
    }
    this.finish(p);
  }

  private async structuredChunk(): Promise<void> {
    const h = await this.inbox.read(STRUCTURED_REPLY_HEADER_BYTES - 4);
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    const p = this.take(h.readBigUInt64BE(4));
    const length = h.readUInt32BE(12);
    // A data chunk carries at most the request; error chunks carry a short message.
    const limit = p.kind === 'read' ? p.length + 8 : MAX_STATUS_CHUNK_BYTES;
    if (length > Math.max(limit, 8192)) throw protocolError('NBD reply chunk is too long', { length, type });
    const payload = await this.inbox.read(length);

    if (type === NBD_REPLY_TYPE_NONE) {
      if (length !== 0) throw protocolError('NBD NONE chunk has a payload', { length });
    } else if (type & NBD_REPLY_TYPE_ERROR_BIT) {
      if (length < 6) throw protocolError('NBD error chunk is too short', { length });
      const messageLength = payload.readUInt16BE(4);
      const expected = 6 + messageLength + (type === NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0);
      if ((type === NBD_REPLY_TYPE_ERROR || type === NBD_REPLY_TYPE_ERROR_OFFSET) && expected !== length) {
        throw protocolError('NBD error chunk has a bad length', { length, messageLength });
      }
      p.serverError ??= { errno: payload.readUInt32BE(0), message: payload.toString('utf8', 6, 6 + Math.min(messageLength, length - 6)) };
    } else if (p.kind === 'read' && type === NBD_REPLY_TYPE_OFFSET_DATA) {
      if (length < 9) throw protocolError('NBD data chunk is too short', { length });
      this.place(p, Number(payload.readBigUInt64BE(0)), length - 8);
      payload.copy(p.data, Number(payload.readBigUInt64BE(0)) - p.offset, 8);
    } else if (p.kind === 'read' && type === NBD_REPLY_TYPE_OFFSET_HOLE) {
      if (length !== 12) throw protocolError('NBD hole chunk has a bad length', { length });
      const at = Number(payload.readBigUInt64BE(0));
      const size = payload.readUInt32BE(8);
      this.place(p, at, size);
      p.data.fill(0, at - p.offset, at - p.offset + size);
    } else if (p.kind === 'status' && type === NBD_REPLY_TYPE_BLOCK_STATUS) {
      if (length < 12 || (length - 4) % 8 !== 0) throw protocolError('NBD block status chunk has a bad length', { length });
      if (payload.readUInt32BE(0) === p.contextId) p.extents = this.descriptors(p, payload);
    } else {
      throw protocolError('NBD reply chunk of a type that does not fit the request', { type, request: p.kind });
    }
    if (flags & NBD_REPLY_FLAG_DONE) this.finish(p);
  }

  private place(p: PendingRead, at: number, size: number): void {
    if (size <= 0 || at < p.offset || at + size > p.offset + p.length) {
      throw protocolError('NBD read chunk lies outside the request', { offset: p.offset, length: p.length, chunkOffset: at, chunkLength: size });
    }
    p.covered += size;
  }

  private descriptors(p: PendingStatus, payload: Buffer): NbdStatusExtent[] {
    const out: NbdStatusExtent[] = [];
    const end = p.offset + p.length;
    let at = p.offset;
    for (let i = 4; i + 8 <= payload.length && at < end; i += 8) {
      const length = payload.readUInt32BE(i);
      if (length === 0) throw protocolError('NBD block status descriptor of length zero');
      const clipped = Math.min(length, end - at);
      out.push({ offset: at, length: clipped, flags: payload.readUInt32BE(i + 4) });
      at += clipped;
    }
    return out;
  }
}

function openSocket(target: NbdTarget, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = 'socketPath' in target ? connect({ path: target.socketPath }) : connect({ host: target.host, port: target.port });
    const where = 'socketPath' in target ? target.socketPath : `${target.host}:${target.port}`;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(protocolError(`cannot connect to the NBD server at ${where} within ${timeoutMs} ms`, { target: where }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new LifeboatError('NBD_PROTOCOL', `cannot connect to the NBD server at ${where}: ${err.message}`, {
        cause: err,
        retryable: true,
        details: { target: where },
      }));
    });
  });
}

function option(socket: Socket, opt: number, data: Buffer = Buffer.alloc(0)): void {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  socket.write(Buffer.concat([h, data]));
}

interface OptionReply {
  readonly type: number;
  readonly data: Buffer;
}

async function optionReply(inbox: Inbox, opt: number): Promise<OptionReply> {
  const h = await inbox.read(OPTION_REPLY_HEADER_BYTES);
  if (h.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw protocolError('NBD option reply has a bad magic');
  if (h.readUInt32BE(8) !== opt) throw protocolError('NBD option reply for another option', { expected: opt, got: h.readUInt32BE(8) });
  const length = h.readUInt32BE(16);
  if (length > MAX_OPTION_REPLY_BYTES) throw protocolError('NBD option reply is too long', { length });
  return { type: h.readUInt32BE(12), data: await inbox.read(length) };
}

function isOptionError(type: number): boolean {
  return (type & 0x80000000) !== 0;
}

function optionErrorText(reply: OptionReply): string {
  return reply.data.length > 0 ? reply.data.toString('utf8') : `error 0x${(reply.type >>> 0).toString(16)}`;
}

function lengthPrefixed(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const n = Buffer.alloc(4);
  n.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([n, bytes]);
}

async function negotiate(socket: Socket, inbox: Inbox, options: NbdClientOptions): Promise<NbdExportInfo> {
  const greeting = await inbox.read(18);
  if (greeting.readBigUInt64BE(0) !== NBD_MAGIC) throw protocolError('not an NBD server (no NBDMAGIC)');
  const second = greeting.readBigUInt64BE(8);
  if (second === NBD_OLDSTYLE_MAGIC) throw protocolError('NBD server speaks only the oldstyle handshake');
  if (second !== NBD_OPTS_MAGIC) throw protocolError('NBD greeting has a bad magic');
  const serverFlags = greeting.readUInt16BE(16);
  if (!(serverFlags & NBD_FLAG_FIXED_NEWSTYLE)) throw protocolError('NBD server does not speak fixed newstyle');
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | (serverFlags & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0), 0);
  socket.write(clientFlags);

  // Structured replies: needed for meta contexts, and they carry error messages and holes.
  option(socket, NBD_OPT_STRUCTURED_REPLY);
  const sr = await optionReply(inbox, NBD_OPT_STRUCTURED_REPLY);
  let structuredReplies: boolean;
  if (sr.type === NBD_REP_ACK) structuredReplies = true;
  else if (isOptionError(sr.type)) structuredReplies = false;
  else throw protocolError('unexpected reply to NBD_OPT_STRUCTURED_REPLY', { type: sr.type });

  const wanted = options.metaContexts ?? [];
  const metaContexts = new Map<string, number>();
  if (wanted.length > 0) {
    if (!structuredReplies) throw protocolError('NBD server refuses structured replies, so it cannot report meta contexts');
    const count = Buffer.alloc(4);
    count.writeUInt32BE(wanted.length, 0);
    option(socket, NBD_OPT_SET_META_CONTEXT, Buffer.concat([lengthPrefixed(options.exportName), count, ...wanted.map(lengthPrefixed)]));
    while (true) {
      const reply = await optionReply(inbox, NBD_OPT_SET_META_CONTEXT);
      if (reply.type === NBD_REP_ACK) break;
      if (reply.type === NBD_REP_META_CONTEXT) {
        if (reply.data.length < 4) throw protocolError('NBD meta context reply is too short');
        metaContexts.set(reply.data.toString('utf8', 4), reply.data.readUInt32BE(0));
      } else if (isOptionError(reply.type)) {
        await abandon(socket, inbox);
        throw new LifeboatError(reply.type === NBD_REP_ERR_UNKNOWN ? 'NOT_FOUND' : 'NBD_PROTOCOL', `NBD server refused the meta contexts: ${optionErrorText(reply)}`, {
          details: { exportName: options.exportName, metaContexts: wanted },
        });
      } else {
        throw protocolError('unexpected reply to NBD_OPT_SET_META_CONTEXT', { type: reply.type });
      }
    }
    const missing = wanted.filter((c) => !metaContexts.has(c));
    if (missing.length > 0) {
      await abandon(socket, inbox);
      throw protocolError(`NBD server does not offer the meta context ${missing.join(', ')}`, { exportName: options.exportName, missing });
    }
  }

  const infoRequests = Buffer.alloc(4);
  infoRequests.writeUInt16BE(1, 0);
  infoRequests.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 2);
  option(socket, NBD_OPT_GO, Buffer.concat([lengthPrefixed(options.exportName), infoRequests]));
  let sizeBytes: number | null = null;
  let transmissionFlags = 0;
  let minimumBlockBytes = 1;
  let preferredBlockBytes = 4096;
  let maximumBlockBytes = DEFAULT_MAX_REQUEST_BYTES;
  while (true) {
    const reply = await optionReply(inbox, NBD_OPT_GO);
    if (reply.type === NBD_REP_ACK) break;
    if (reply.type === NBD_REP_INFO) {
      if (reply.data.length < 2) throw protocolError('NBD info reply is too short');
      const infoType = reply.data.readUInt16BE(0);
      if (infoType === NBD_INFO_EXPORT) {
        if (reply.data.length !== 12) throw protocolError('NBD_INFO_EXPORT has a bad length', { length: reply.data.length });
        const size = reply.data.readBigUInt64BE(2);
        if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError('NBD export is too large', { size: size.toString() });
        sizeBytes = Number(size);
        transmissionFlags = reply.data.readUInt16BE(10);
      } else if (infoType === NBD_INFO_BLOCK_SIZE && reply.data.length === 14) {
        minimumBlockBytes = reply.data.readUInt32BE(2);
        preferredBlockBytes = reply.data.readUInt32BE(6);
        maximumBlockBytes = Math.min(reply.data.readUInt32BE(10), DEFAULT_MAX_REQUEST_BYTES);
      }
    } else if (isOptionError(reply.type)) {
      await abandon(socket, inbox);
      const unknown = reply.type === NBD_REP_ERR_UNKNOWN;
      throw new LifeboatError(unknown ? 'NOT_FOUND' : 'NBD_PROTOCOL', `NBD server refused export "${options.exportName}": ${optionErrorText(reply)}`, {
        details: { exportName: options.exportName, reply: reply.type === NBD_REP_ERR_UNSUP ? 'unsupported' : reply.type >>> 0 },
      });
    } else {
      throw protocolError('unexpected reply to NBD_OPT_GO', { type: reply.type });
    }
  }
  if (sizeBytes === null) throw protocolError('NBD server acknowledged NBD_OPT_GO without NBD_INFO_EXPORT');
  if (maximumBlockBytes < 4096) maximumBlockBytes = DEFAULT_MAX_REQUEST_BYTES;
  return {
    exportName: options.exportName,
    sizeBytes,
    transmissionFlags,
    readOnly: (transmissionFlags & NBD_FLAG_READ_ONLY) !== 0,
    structuredReplies,
    metaContexts,
    minimumBlockBytes,
    preferredBlockBytes,
    maximumBlockBytes,
  };
}

/** Politely ends negotiation after a refusal, so the server logs no error. Best effort. */
async function abandon(socket: Socket, inbox: Inbox): Promise<void> {
  option(socket, NBD_OPT_ABORT);
  await Promise.race([inbox.read(OPTION_REPLY_HEADER_BYTES).catch(() => undefined), new Promise((r) => setTimeout(r, 100).unref())]);
}

/**
 * A BlockSource over one NBD connection: holes and zeros come from
 * base:allocation when it was negotiated, otherwise everything reads as data.
 * close() closes the connection.
 */
export function nbdBlockSource(client: NbdClient, afterClose?: () => Promise<void>): BlockSource {
  const hasAllocation = client.info.metaContexts.has(BASE_ALLOCATION);
  return {
    sizeBytes: client.sizeBytes,
    read: (offset, length) => client.read(offset, length),
    extents: async (offset, length): Promise<Extent[]> => {
      if (!hasAllocation) return [{ offset, length, zero: false }];
      return (await client.extents(BASE_ALLOCATION, offset, length)).map((e) => ({
        offset: e.offset,
        length: e.length,
        // Only ZERO promises zeros; a HOLE alone may read as anything.
        zero: (e.flags & NBD_STATE_ZERO) !== 0,
      }));
    },
    close: async () => {
      await client.close();
      await afterClose?.();
    },
  };
}
