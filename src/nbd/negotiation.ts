import { LifeboatError } from '../core/errors.js';
import type { ExportTable, NbdExport } from './export-table.js';
import {
  BASE_ALLOCATION,
  EXPORT_NAME_PADDING_BYTES,
  MAX_STRING_BYTES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  OPTION_HEADER_BYTES,
} from './protocol.js';
import type { ReplyWriter } from './reply-writer.js';
import type { SocketReader } from './socket-reader.js';
import { optionReply, prefixedString } from './wire.js';

/** Read-only exports: flush is a no-op we still answer; reads are coherent across connections. */
export const TRANSMISSION_FLAGS = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;

/**
 * Writable exports: FUA, write-zeroes and trim are accepted; multi-conn holds
 * because a target's flush covers writes completed on every connection.
 */
export const WRITABLE_TRANSMISSION_FLAGS =
  NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN;

export function transmissionFlags(exp: NbdExport): number {
  return exp.writable ? WRITABLE_TRANSMISSION_FLAGS : TRANSMISSION_FLAGS;
}

/** Context id we hand out for base:allocation (any non-zero value would do). */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

export interface NegotiationLimits {
  /** Option payloads longer than this end the connection. */
  readonly maxOptionBytes: number;
  /** Options per connection before we call it a denial of service and hang up. */
  readonly maxOptions: number;
  /** Advertised in NBD_INFO_BLOCK_SIZE as the maximum; enforced in transmission. */
  readonly maxBlockBytes: number;
  readonly preferredBlockBytes: number;
}

/** What option haggling agreed on; the input to the transmission phase. */
export interface NbdSession {
  readonly export: NbdExport;
  readonly structuredReplies: boolean;
  /** Context id for base:allocation, or null when the client selected none. */
  readonly baseAllocationId: number | null;
}

/** Thrown for input that cannot be answered with an option error: the connection ends. */
function violation(message: string, details: Record<string, unknown> = {}): LifeboatError {
  return new LifeboatError('NBD_PROTOCOL', message, { details });
}

/** A syntactically invalid option payload; answered with NBD_REP_ERR_INVALID. */
class InvalidOption extends Error {}

/** Reads fields from an option payload, throwing InvalidOption on truncation. */
class PayloadCursor {
  private at = 0;
  constructor(private readonly data: Buffer) {}
  u16(): number {
    this.need(2);
    const v = this.data.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.data.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  string(bytes: number): string {
    if (bytes > MAX_STRING_BYTES) throw new InvalidOption('string longer than 4096 bytes');
    this.need(bytes);
    const v = this.data.toString('utf8', this.at, this.at + bytes);
    this.at += bytes;
    return v;
  }
  /** Reads `count` items; a count larger than the payload can hold fails fast on truncation. */
  list<T>(count: number, item: () => T): T[] {
    const out: T[] = [];
    for (let i = 0; i < count; i++) out.push(item());
    return out;
  }
  end(): void {
    if (this.at !== this.data.length) throw new InvalidOption('trailing bytes in option');
  }
  private need(bytes: number): void {
    if (this.at + bytes > this.data.length) throw new InvalidOption('option payload is truncated');
  }
}

interface MetaSelection {
  readonly exportName: string;
  readonly baseAllocation: boolean;
}

/**
 * Runs the fixed newstyle handshake and option haggling. Resolves with the agreed
 * session, or null when the client sent NBD_OPT_ABORT (after we acknowledged it).
 * Rejects with an NBD_PROTOCOL error when the client breaks the protocol in a way
 * that cannot be answered (bad magic or flags, oversized option, unknown export in
 * NBD_OPT_EXPORT_NAME, too many options), and with PeerClosedError on EOF.
 */
export async function negotiate(
  reader: SocketReader,
  writer: ReplyWriter,
  exports: ExportTable,
  limits: NegotiationLimits,
): Promise<NbdSession | null> {
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBD_MAGIC, 0);
  greeting.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  greeting.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  await writer.send([greeting]);

  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  const known = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
  if ((clientFlags & ~known) !== 0 || (clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) === 0) {
    throw violation('NBD client flags are unknown or lack fixed newstyle', { clientFlags });
  }
  const noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;

  let structuredReplies = false;
  let meta: MetaSelection | null = null;
  const reply = (option: number, type: number, payload?: Buffer): Promise<void> =>
    writer.send([optionReply(option, type, payload)]);

  for (let count = 0; ; count++) {
    if (count >= limits.maxOptions) throw violation('NBD client sent too many options', { count });
    const header = await reader.read(OPTION_HEADER_BYTES);
    if (header.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) throw violation('NBD option has a bad magic');
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > limits.maxOptionBytes) throw violation('NBD option is too long', { option, length });
    const data = await reader.read(length);

    if (option === NBD_OPT_EXPORT_NAME) {
      const exp = exports.lookup(data.toString('utf8'));
      if (exp === undefined) throw violation('NBD_OPT_EXPORT_NAME named an unknown export');
      const tail = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING_BYTES));
      tail.writeBigUInt64BE(BigInt(exp.source.sizeBytes), 0);
      tail.writeUInt16BE(transmissionFlags(exp), 8);
      await writer.send([tail]);
      return session(exp, structuredReplies, meta);
    }
    if (option === NBD_OPT_ABORT) {
      await reply(option, NBD_REP_ACK);
      return null;
    }
    try {
      const cursor = new PayloadCursor(data);
      switch (option) {
        case NBD_OPT_LIST: {
          cursor.end();
          for (const exp of exports.list()) await reply(option, NBD_REP_SERVER, prefixedString(exp.name));
          await reply(option, NBD_REP_ACK);
          break;
        }
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
          const name = cursor.string(cursor.u32());
          const requests = cursor.list(cursor.u16(), () => cursor.u16());
          cursor.end();
          const exp = exports.lookup(name);
          if (exp === undefined) {
            await reply(option, NBD_REP_ERR_UNKNOWN, Buffer.from('no such export', 'utf8'));
            break;
          }
          for (const info of infoReplies(exp, requests, limits)) await reply(option, NBD_REP_INFO, info);
          await reply(option, NBD_REP_ACK);
          if (option === NBD_OPT_GO) {
            // Contexts were chosen for the export named in SET_META_CONTEXT; a different one gets none.
            return session(exp, structuredReplies, meta !== null && meta.exportName === name ? meta : null);
          }
          break;
        }
        case NBD_OPT_STRUCTURED_REPLY: {
          cursor.end();
          structuredReplies = true;
          await reply(option, NBD_REP_ACK);
          break;
        }
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT: {
          if (!structuredReplies) throw new InvalidOption('meta contexts need structured replies first');
          const name = cursor.string(cursor.u32());
          const queries = cursor.list(cursor.u32(), () => cursor.string(cursor.u32()));
          cursor.end();
          if (exports.lookup(name) === undefined) {
            await reply(option, NBD_REP_ERR_UNKNOWN, Buffer.from('no such export', 'utf8'));
            break;
          }
          const setting = option === NBD_OPT_SET_META_CONTEXT;
          const matches = setting
            ? queries.includes(BASE_ALLOCATION)
            : queries.length === 0 || queries.some((q) => q === BASE_ALLOCATION || q === 'base:');
          if (matches) {
            const id = Buffer.alloc(4);
            id.writeUInt32BE(setting ? BASE_ALLOCATION_CONTEXT_ID : 0, 0);
            await reply(option, NBD_REP_META_CONTEXT, Buffer.concat([id, Buffer.from(BASE_ALLOCATION, 'utf8')]));
          }
          if (setting) meta = { exportName: name, baseAllocation: matches };
          await reply(option, NBD_REP_ACK);
          break;
        }
        default:
          // Includes NBD_OPT_STARTTLS: this server never speaks TLS (loopback and unix sockets only).
          await reply(option, NBD_REP_ERR_UNSUP, Buffer.from('option not supported', 'utf8'));
      }
    } catch (err) {
      if (!(err instanceof InvalidOption)) throw err;
      await reply(option, NBD_REP_ERR_INVALID, Buffer.from(err.message, 'utf8'));
    }
  }
}

function session(exp: NbdExport, structuredReplies: boolean, meta: MetaSelection | null): NbdSession {
  const wanted = structuredReplies && meta !== null && meta.baseAllocation;
  return { export: exp, structuredReplies, baseAllocationId: wanted ? BASE_ALLOCATION_CONTEXT_ID : null };
}

/** NBD_INFO_EXPORT always, NBD_INFO_BLOCK_SIZE always (min 1 suits every client), the name on request. */
function infoReplies(exp: NbdExport, requests: readonly number[], limits: NegotiationLimits): Buffer[] {
  const exportInfo = Buffer.alloc(12);
  exportInfo.writeUInt16BE(NBD_INFO_EXPORT, 0);
  exportInfo.writeBigUInt64BE(BigInt(exp.source.sizeBytes), 2);
  exportInfo.writeUInt16BE(transmissionFlags(exp), 10);
  const blockSize = Buffer.alloc(14);
  blockSize.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  blockSize.writeUInt32BE(1, 2);
  blockSize.writeUInt32BE(limits.preferredBlockBytes, 6);
  blockSize.writeUInt32BE(limits.maxBlockBytes, 10);
  const out = [exportInfo, blockSize];
  if (requests.includes(NBD_INFO_NAME)) {
    const type = Buffer.alloc(2);
    type.writeUInt16BE(NBD_INFO_NAME, 0);
    out.push(Buffer.concat([type, Buffer.from(exp.name, 'utf8')]));
  }
  return out;
}
