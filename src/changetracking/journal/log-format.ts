import { crc32 } from 'node:zlib';

/**
 * The change log (`.hrl`) of the journal tracker, byte for byte. Every write the
 * agent serves over NBD is appended here before it reaches the image. All
 * integers are little-endian; CRC-32 is the IEEE polynomial (zlib's crc32).
 *
 * File header, 64 bytes:
 *
 *   0  8  magic "LBHRLOG\0"
 *   8  2  version = 1
 *  10  2  header bytes = 64
 *  12  4  reserved, 0
 *  16  8  log number (u64; files are named <number as 16 hex digits>.hrl and
 *         replayed in number order)
 *  24  8  image size in bytes when the log was started
 *  32 16  boot id of the machine that started it (/proc/sys/kernel/random/boot_id, as 16 bytes)
 *  48  8  created at, ms since the epoch
 *  56  4  reserved, 0
 *  60  4  CRC-32 of bytes 0..60
 *
 * Then records, back to back, each a 32-byte header and a payload:
 *
 *   0  4  magic "HRL1" (0x314c5248 read as u32 LE)
 *   4  1  type: 1 = WRITE (payload = the data), 2 = ZERO (no payload: the range now reads as zeros)
 *   5  1  flags: bit 0 = the client asked for FUA; other bits 0
 *   6  2  reserved, 0
 *   8  8  offset in the image (u64)
 *  16  4  length of the range in bytes (u32, > 0)
 *  20  4  payload bytes (u32): = length for WRITE, 0 for ZERO
 *  24  4  reserved, 0
 *  28  4  CRC-32 of header bytes 0..28 followed by the payload
 *
 * Readers refuse an unknown version or type. A record is only ever appended
 * whole by one sequential writer, so after a process kill the file is a clean
 * prefix of what was appended: the last record may be cut short (a torn tail),
 * nothing else can be wrong. docs/nbd.md, "Journal change log", says what replay
 * makes of that.
 */

export const LOG_MAGIC = Buffer.from('LBHRLOG\0', 'latin1');
export const LOG_VERSION = 1;
export const LOG_HEADER_BYTES = 64;
export const RECORD_MAGIC = 0x314c5248;
export const RECORD_HEADER_BYTES = 32;
export const LOG_SUFFIX = '.hrl';

export const RecordType = { WRITE: 1, ZERO: 2 } as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];
export const RECORD_FLAG_FUA = 1;

export interface LogHeader {
  readonly number: number;
  readonly imageSizeBytes: number;
  /** 32 lowercase hex digits (the boot id without dashes). */
  readonly bootId: string;
  readonly createdAtMs: number;
}

export interface RecordHeader {
  readonly type: RecordType;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  readonly payloadBytes: number;
  readonly crc: number;
}

export function logFileName(number: number): string {
  return `${number.toString(16).padStart(16, '0')}${LOG_SUFFIX}`;
}

/** The log number of a file name, or null for anything that is not a log. */
export function parseLogFileName(name: string): number | null {
  const m = /^([0-9a-f]{16})\.hrl$/.exec(name);
  return m?.[1] === undefined ? null : Number.parseInt(m[1], 16);
}

/** `1f7d8918-6e64-...` → 32 hex digits; anything else is kept only if it is 32 hex digits. */
export function normaliseBootId(text: string): string {
  const hex = text.trim().toLowerCase().replace(/-/g, '');
  return /^[0-9a-f]{32}$/.test(hex) ? hex : '0'.repeat(32);
}

export function encodeLogHeader(h: LogHeader): Buffer {
  const b = Buffer.alloc(LOG_HEADER_BYTES);
  LOG_MAGIC.copy(b, 0);
  b.writeUInt16LE(LOG_VERSION, 8);
  b.writeUInt16LE(LOG_HEADER_BYTES, 10);
  b.writeBigUInt64LE(BigInt(h.number), 16);
  b.writeBigUInt64LE(BigInt(h.imageSizeBytes), 24);
  Buffer.from(h.bootId, 'hex').copy(b, 32);
  b.writeBigUInt64LE(BigInt(h.createdAtMs), 48);
  b.writeUInt32LE(crc32(b.subarray(0, 60)), 60);
  return b;
}

/** Decodes a file header; a string says why it is not one we can read. */
export function decodeLogHeader(b: Buffer): LogHeader | string {
  if (b.length < LOG_HEADER_BYTES) return 'file shorter than its header';
  if (!b.subarray(0, 8).equals(LOG_MAGIC)) return 'bad file magic';
  if (b.readUInt32LE(60) !== crc32(b.subarray(0, 60))) return 'file header checksum mismatch';
  if (b.readUInt16LE(8) !== LOG_VERSION || b.readUInt16LE(10) !== LOG_HEADER_BYTES) return 'unknown log version';
  return {
    number: Number(b.readBigUInt64LE(16)),
    imageSizeBytes: Number(b.readBigUInt64LE(24)),
    bootId: b.subarray(32, 48).toString('hex'),
    createdAtMs: Number(b.readBigUInt64LE(48)),
  };
}

/** The header of one record; its CRC covers the payload too, so pass it. */
export function encodeRecordHeader(type: RecordType, flags: number, offset: number, length: number, payload: Buffer | null): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_BYTES);
  b.writeUInt32LE(RECORD_MAGIC, 0);
  b.writeUInt8(type, 4);
  b.writeUInt8(flags, 5);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(length, 16);
  b.writeUInt32LE(payload === null ? 0 : payload.length, 20);
  const headCrc = crc32(b.subarray(0, 28));
  b.writeUInt32LE(payload === null ? headCrc : crc32(payload, headCrc), 28);
  return b;
}

/** Decodes a record header (checks everything but the CRC); a string says why it is damaged. */
export function decodeRecordHeader(b: Buffer): RecordHeader | string {
  if (b.readUInt32LE(0) !== RECORD_MAGIC) return 'bad record magic';
  const type = b.readUInt8(4);
  if (type !== RecordType.WRITE && type !== RecordType.ZERO) return `unknown record type ${type}`;
  const length = b.readUInt32LE(16);
  const payloadBytes = b.readUInt32LE(20);
  if (length === 0) return 'empty record';
  if (payloadBytes !== (type === RecordType.WRITE ? length : 0)) return 'record payload length does not match its type';
  return { type, flags: b.readUInt8(5), offset: Number(b.readBigUInt64LE(8)), length, payloadBytes, crc: b.readUInt32LE(28) };
}

/** True when the record's CRC matches its header bytes and payload. */
export function recordCrcMatches(header: Buffer, payload: Buffer): boolean {
  const headCrc = crc32(header.subarray(0, 28));
  const crc = payload.length === 0 ? headCrc : crc32(payload, headCrc);
  return crc === header.readUInt32LE(28);
}
