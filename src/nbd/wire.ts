import {
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './protocol.js';
import type { NbdErrno } from './protocol.js';

/**
 * Encoders for the server's messages. Each returns the buffers of one whole
 * message, to be written back to back so that no other message can interleave.
 */

/** One option reply: magic, option, reply type, length, payload. */
export function optionReply(option: number, replyType: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(20);
  header.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(replyType >>> 0, 12);
  header.writeUInt32BE(payload.length, 16);
  return Buffer.concat([header, payload]);
}

/** A length-prefixed (32-bit) UTF-8 string followed by `rest`. */
export function prefixedString(text: string, rest: Buffer = Buffer.alloc(0)): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([length, bytes, rest]);
}

/** Simple reply header; for a successful read the data follows as a second buffer. */
export function simpleReply(handle: Buffer, error: number, data?: Buffer): Buffer[] {
  const header = Buffer.alloc(16);
  header.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  header.writeUInt32BE(error, 4);
  handle.copy(header, 8);
  return data === undefined ? [header] : [header, data];
}

function chunkHeader(handle: Buffer, flags: number, type: number, payloadBytes: number): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  handle.copy(header, 8);
  header.writeUInt32BE(payloadBytes, 16);
  return header;
}

/** The whole reply to a read, as one final OFFSET_DATA chunk. */
export function offsetDataChunk(handle: Buffer, offset: number, data: Buffer): Buffer[] {
  const header = chunkHeader(handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 8 + data.length);
  const offsetField = Buffer.alloc(8);
  offsetField.writeBigUInt64BE(BigInt(offset), 0);
  return [header, offsetField, data];
}

/** A final ERROR chunk carrying an errno and a short message for humans. */
export function errorChunk(handle: Buffer, error: NbdErrno, message: string): Buffer[] {
  const text = Buffer.from(message, 'utf8');
  const payload = Buffer.alloc(6);
  payload.writeUInt32BE(error, 0);
  payload.writeUInt16BE(text.length, 4);
  return [chunkHeader(handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + text.length), payload, text];
}

/** One block status descriptor: extent length (fits 32 bits) and state flags. */
export interface StatusDescriptor {
  readonly length: number;
  readonly flags: number;
}

/** A final BLOCK_STATUS chunk for one metadata context. */
export function blockStatusChunk(handle: Buffer, contextId: number, descriptors: readonly StatusDescriptor[]): Buffer[] {
  const payload = Buffer.alloc(4 + 8 * descriptors.length);
  payload.writeUInt32BE(contextId, 0);
  descriptors.forEach((d, i) => {
    payload.writeUInt32BE(d.length, 4 + 8 * i);
    payload.writeUInt32BE(d.flags, 8 + 8 * i);
  });
  return [chunkHeader(handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, payload.length), payload];
}
