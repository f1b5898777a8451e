import { connect } from 'node:net';
import type { Socket } from 'node:net';
import {
  NBD_CMD_DISC,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_MAGIC,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from '../../src/nbd/protocol.js';
import { SocketReader } from '../../src/nbd/socket-reader.js';

export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

/** A reply message: simple (with data for reads the client told us about) or one structured chunk. */
export type ReplyMessage =
  | { readonly kind: 'simple'; readonly handle: bigint; readonly error: number; readonly data: Buffer }
  | { readonly kind: 'chunk'; readonly handle: bigint; readonly flags: number; readonly type: number; readonly payload: Buffer };

/**
 * A deliberately small NBD client speaking raw bytes, for tests that need to do
 * what real clients never do (pipelining by hand, bad input, writes).
 */
export class RawNbdClient {
  readonly reader: SocketReader;
  /** Simple-reply data lengths by handle, for reads we sent. */
  private readonly pendingReads = new Map<bigint, number>();
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    this.reader = new SocketReader(socket, 64 * 1024 * 1024);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
  }

  static connect(target: { port: number } | { socketPath: string }): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket = 'port' in target ? connect({ host: '127.0.0.1', port: target.port }) : connect({ path: target.socketPath });
      socket.once('connect', () => resolve(new RawNbdClient(socket)));
      socket.once('error', reject);
    });
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Reads the 18-byte greeting, checks both magics, returns the handshake flags. */
  async greeting(): Promise<number> {
    const g = await this.reader.read(18);
    if (g.readBigUInt64BE(0) !== NBD_MAGIC || g.readBigUInt64BE(8) !== NBD_OPTS_MAGIC) throw new Error('bad greeting');
    return g.readUInt16BE(16);
  }

  sendClientFlags(flags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0, 0);
    this.write(b);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), declaredLength = data.length): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(declaredLength >>> 0, 12);
    this.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.reader.read(20);
    if (h.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw new Error('bad option reply magic');
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.reader.read(length) };
  }

  /** Option replies up to and including the final ACK or error. */
  async optionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    while (true) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === NBD_REP_ACK || r.type >= 0x80000000) return out;
    }
  }

  /** Full handshake into transmission with NBD_OPT_GO; returns size and transmission flags. */
  async handshake(
    exportName: string,
    opts: { structured?: boolean; baseAllocation?: boolean } = {},
  ): Promise<{ size: bigint; flags: number }> {
    await this.greeting();
    this.sendClientFlags();
    if (opts.structured === true) {
      this.sendOption(NBD_OPT_STRUCTURED_REPLY);
      const [r] = await this.optionReplies();
      if (r?.type !== NBD_REP_ACK) throw new Error('structured replies refused');
      if (opts.baseAllocation === true) {
        this.sendOption(NBD_OPT_SET_META_CONTEXT, metaContextPayload(exportName, ['base:allocation']));
        const replies = await this.optionReplies();
        if (replies.at(-1)?.type !== NBD_REP_ACK) throw new Error('SET_META_CONTEXT failed');
      }
    }
    this.sendOption(NBD_OPT_GO, goPayload(exportName));
    let result: { size: bigint; flags: number } | null = null;
    for (const r of await this.optionReplies()) {
      if (r.type === NBD_REP_INFO && r.data.readUInt16BE(0) === 0) {
        result = { size: r.data.readBigUInt64BE(2), flags: r.data.readUInt16BE(10) };
      } else if (r.type >= 0x80000000) {
        throw new Error(`NBD_OPT_GO failed with 0x${r.type.toString(16)}`);
      }
    }
    if (result === null) throw new Error('no NBD_INFO_EXPORT');
    return result;
  }

  request(type: number, handle: bigint, offset: bigint | number, length: number, flags = 0, payload?: Buffer): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length >>> 0, 24);
    if (type === 0) this.pendingReads.set(handle, length);
    this.write(payload === undefined ? h : Buffer.concat([h, payload]));
  }

  disconnect(): void {
    this.request(NBD_CMD_DISC, 0n, 0, 0);
  }

  /** Reads one reply message; simple replies to successful reads carry the read's data. */
  async reply(): Promise<ReplyMessage> {
    const magic = (await this.reader.read(4)).readUInt32BE(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      const rest = await this.reader.read(12);
      const error = rest.readUInt32BE(0);
      const handle = rest.readBigUInt64BE(4);
      const length = this.pendingReads.get(handle);
      this.pendingReads.delete(handle);
      const data = error === 0 && length !== undefined ? await this.reader.read(length) : Buffer.alloc(0);
      return { kind: 'simple', handle, error, data };
    }
    if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
      const rest = await this.reader.read(16);
      const payload = await this.reader.read(rest.readUInt32BE(12));
      return { kind: 'chunk', flags: rest.readUInt16BE(0), type: rest.readUInt16BE(2), handle: rest.readBigUInt64BE(4), payload };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function goPayload(exportName: string, infoRequests: readonly number[] = []): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const b = Buffer.alloc(4 + name.length + 2 + 2 * infoRequests.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(infoRequests.length, 4 + name.length);
  infoRequests.forEach((r, i) => b.writeUInt16BE(r, 6 + name.length + 2 * i));
  return b;
}

export function metaContextPayload(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n, 0);
    return b;
  };
  const name = Buffer.from(exportName, 'utf8');
  parts.push(u32(name.length), name, u32(queries.length));
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    parts.push(u32(qb.length), qb);
  }
  return Buffer.concat(parts);
}
