import { LifeboatError } from '../core/errors.js';

/**
 * Frames of the replication protocol (docs/replication.md, "Wire protocol"):
 *
 *   u32 frameLength (bytes after this field) | u8 type | u32 headerLength | header (UTF-8 JSON object) | body
 *
 * Big-endian. The decoder checks every length against its limit as soon as the
 * 9-byte prefix is in, before it keeps any byte of the header or body, so a peer
 * claiming 4 GiB makes it throw, not allocate.
 */

export const FrameType = {
  HELLO: 1,
  WELCOME: 2,
  SEGMENT: 3,
  ACK: 4,
  ERROR: 5,
  PING: 6,
  PONG: 7,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const FRAME_TYPE_NAMES: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(Object.entries(FrameType).map(([name, type]) => [type, name])),
);

/** Bytes before the header: u32 frameLength, u8 type, u32 headerLength. */
export const FRAME_PREFIX_BYTES = 9;
export const MAX_HEADER_BYTES = 64 * 1024;
/** Data of one segment (the sum of its extent lengths). */
export const MAX_SEGMENT_DATA_BYTES = 16 * 1024 * 1024;
/** The largest frameLength the protocol allows. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024 + 64 * 1024;

export interface Frame {
  readonly type: FrameType;
  /** The parsed header: always a plain JSON object. */
  readonly header: Record<string, unknown>;
  /** The header as received (what the spool keeps). */
  readonly headerBytes: Buffer;
  readonly body: Buffer;
}

function invalid(message: string, details: Record<string, unknown> = {}): LifeboatError {
  return new LifeboatError('PROTOCOL_INVALID', message, { details });
}

function isFrameType(type: number): type is FrameType {
  return type >= FrameType.HELLO && type <= FrameType.PONG;
}

/** The largest body a frame of `type` may carry: only SEGMENT has one. */
export function maxBodyBytes(type: FrameType): number {
  return type === FrameType.SEGMENT ? MAX_SEGMENT_DATA_BYTES : 0;
}

/** The 9-byte prefix of a frame whose header and body have these lengths. */
export function framePrefix(type: FrameType, headerLength: number, bodyLength: number): Buffer {
  const prefix = Buffer.allocUnsafe(FRAME_PREFIX_BYTES);
  prefix.writeUInt32BE(5 + headerLength + bodyLength, 0);
  prefix.writeUInt8(type, 4);
  prefix.writeUInt32BE(headerLength, 5);
  return prefix;
}

/**
 * Encodes one frame as the buffers to write (prefix, header, body), so a large
 * body is never copied. Throws PROTOCOL_INVALID when a limit would be broken:
 * the sender finds out, not the peer.
 */
export function encodeFrame(type: FrameType, header: Record<string, unknown>, body: Buffer = Buffer.alloc(0)): Buffer[] {
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  if (headerBytes.length > MAX_HEADER_BYTES) throw invalid(`a ${FRAME_TYPE_NAMES[type]} header of ${headerBytes.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  if (body.length > maxBodyBytes(type)) throw invalid(`a ${FRAME_TYPE_NAMES[type]} body of ${body.length} bytes exceeds ${maxBodyBytes(type)}`);
  const parts = [framePrefix(type, headerBytes.length, body.length), headerBytes];
  if (body.length > 0) parts.push(body);
  return parts;
}

/** encodeFrame joined into one buffer (small frames, tests). */
export function encodeFrameBuffer(type: FrameType, header: Record<string, unknown>, body?: Buffer): Buffer {
  return Buffer.concat(encodeFrame(type, header, body));
}

/**
 * Parses a header: UTF-8 JSON whose top level is an object. Bad UTF-8, bad JSON
 * or any other top-level value is PROTOCOL_INVALID.
 */
export function parseHeader(bytes: Buffer, type: FrameType): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw invalid(`the ${FRAME_TYPE_NAMES[type]} header is not UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid(`the ${FRAME_TYPE_NAMES[type]} header is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(`the ${FRAME_TYPE_NAMES[type]} header is not a JSON object`);
  return value as Record<string, unknown>;
}

/**
 * An incremental decoder over a byte stream: push() what the socket gives,
 * take the frames that completed. At most one frame is held, and never more
 * bytes of it than its checked lengths allow. After it throws, the stream is
 * unusable (the peer broke the protocol; close the connection).
 */
export class FrameDecoder {
  private readonly prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  private prefixFill = 0;
  private type: FrameType = FrameType.HELLO;
  private headerLength = 0;
  private bodyLength = 0;
  private parts: Buffer[] = [];
  private partsFill = 0;
  private broken: LifeboatError | undefined;

  /** Bytes held of the frame being received. */
  get bufferedBytes(): number {
    return this.prefixFill + this.partsFill;
  }

  /** Whether a frame is partly received. */
  get midFrame(): boolean {
    return this.bufferedBytes > 0;
  }

  push(chunk: Buffer): Frame[] {
    if (this.broken) throw this.broken;
    try {
      return this.take(chunk);
    } catch (err) {
      this.broken = err as LifeboatError;
      this.prefixFill = 0;
      this.parts = [];
      this.partsFill = 0;
      throw err;
    }
  }

  /** Call at the end of the stream: a partly received frame is PROTOCOL_INVALID (truncated). */
  end(): void {
    if (this.broken) throw this.broken;
    if (this.midFrame) {
      this.broken = invalid(`the stream ended inside a frame (${this.bufferedBytes} bytes of it received)`);
      throw this.broken;
    }
  }

  private take(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.prefixFill < FRAME_PREFIX_BYTES) {
        const n = Math.min(FRAME_PREFIX_BYTES - this.prefixFill, chunk.length - at);
        chunk.copy(this.prefix, this.prefixFill, at, at + n);
        this.prefixFill += n;
        at += n;
        if (this.prefixFill < FRAME_PREFIX_BYTES) break;
        this.checkPrefix();
        if (this.headerLength + this.bodyLength === 0) throw invalid('a frame with an empty header'); // JSON needs at least "{}"
        continue;
      }
      const want = this.headerLength + this.bodyLength - this.partsFill;
      const n = Math.min(want, chunk.length - at);
      this.parts.push(chunk.subarray(at, at + n));
      this.partsFill += n;
      at += n;
      if (n === want) frames.push(this.finish());
    }
    return frames;
  }

  private checkPrefix(): void {
    const frameLength = this.prefix.readUInt32BE(0);
    const type = this.prefix.readUInt8(4);
    const headerLength = this.prefix.readUInt32BE(5);
    if (frameLength > MAX_FRAME_BYTES) throw invalid(`a frame length of ${frameLength} bytes exceeds ${MAX_FRAME_BYTES}`, { frameLength });
    if (frameLength < 5) throw invalid(`a frame length of ${frameLength} bytes is shorter than its own prefix`, { frameLength });
    if (!isFrameType(type)) throw invalid(`unknown frame type ${type}`, { type });
    if (headerLength > MAX_HEADER_BYTES) throw invalid(`a header length of ${headerLength} bytes exceeds ${MAX_HEADER_BYTES}`, { headerLength });
    if (headerLength > frameLength - 5) throw invalid(`a header length of ${headerLength} bytes exceeds its frame (${frameLength} bytes)`, { headerLength, frameLength });
    const bodyLength = frameLength - 5 - headerLength;
    if (bodyLength > maxBodyBytes(type)) {
      throw invalid(`a ${FRAME_TYPE_NAMES[type]} body of ${bodyLength} bytes exceeds ${maxBodyBytes(type)}`, { type, bodyLength });
    }
    this.type = type;
    this.headerLength = headerLength;
    this.bodyLength = bodyLength;
  }

  private finish(): Frame {
    const all = this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts, this.partsFill);
    // Copy out of the socket's chunk so a small frame does not pin a large buffer.
    const headerBytes = Buffer.from(all.subarray(0, this.headerLength));
    const body = this.parts.length === 1 && this.bodyLength > 0 ? Buffer.from(all.subarray(this.headerLength)) : all.subarray(this.headerLength);
    const frame: Frame = { type: this.type, header: parseHeader(headerBytes, this.type), headerBytes, body };
    this.prefixFill = 0;
    this.parts = [];
    this.partsFill = 0;
    return frame;
  }
}

/** Decodes exactly one complete frame (a spool file); anything else is PROTOCOL_INVALID. */
export function decodeOneFrame(bytes: Buffer): Frame {
  const decoder = new FrameDecoder();
  const frames = decoder.push(bytes);
  decoder.end();
  if (frames.length !== 1) throw invalid(`expected one frame, found ${frames.length}`);
  return frames[0] as Frame;
}
