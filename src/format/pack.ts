import { LifeboatError } from '../core/errors.js';
import { ByteReader, ByteWriter } from './binary.js';
import { CHUNK_ID_BYTES } from './crypto.js';

/**
 * A pack is an immutable object holding sealed frames of chunk data followed by
 * its sealed header and a trailer (docs/format/store.md):
 *
 *   frame 0 | frame 1 | ... | sealed header | u32 header length | "LBP1"
 *
 * A frame seals the concatenation of one or more chunks; the header says where
 * each frame lies and where each chunk lies inside its frame's plaintext. The
 * same header record, with the pack's id and size, is what index objects list.
 */
export const PACK_TRAILER_MAGIC = 'LBP1';
export const PACK_TRAILER_BYTES = 8;
const HEADER_MAGIC = 'LBPH';
const INDEX_MAGIC = 'LBIX';
const VERSION = 1;

export interface FrameRef {
  readonly offset: number;
  readonly length: number;
}

export interface ChunkRef {
  readonly id: Buffer;
  readonly frame: number;
  readonly innerOffset: number;
  readonly length: number;
}

export interface PackHeader {
  /** 16 random bytes, hex in object keys. */
  readonly packId: Buffer;
  readonly sizeBytes: number;
  readonly createdAtMs: number;
  readonly frames: readonly FrameRef[];
  readonly chunks: readonly ChunkRef[];
}

function writeHeaderBody(w: ByteWriter, h: PackHeader): void {
  w.bytes(h.packId).u64(h.sizeBytes).u64(h.createdAtMs).u32(h.frames.length).u32(h.chunks.length);
  for (const f of h.frames) w.u64(f.offset).u32(f.length);
  for (const c of h.chunks) w.bytes(c.id).u32(c.frame).u32(c.innerOffset).u32(c.length);
}

function readHeaderBody(r: ByteReader): PackHeader {
  const packId = Buffer.from(r.bytes(16));
  const sizeBytes = r.u64();
  const createdAtMs = r.u64();
  const frameCount = r.u32();
  const chunkCount = r.u32();
  const frames: FrameRef[] = [];
  for (let i = 0; i < frameCount; i++) frames.push({ offset: r.u64(), length: r.u32() });
  const chunks: ChunkRef[] = [];
  for (let i = 0; i < chunkCount; i++) {
    const id = Buffer.from(r.bytes(CHUNK_ID_BYTES));
    const frame = r.u32();
    if (frame >= frameCount) r.fail(`chunk ${i} names frame ${frame} of ${frameCount}`);
    chunks.push({ id, frame, innerOffset: r.u32(), length: r.u32() });
  }
  return { packId, sizeBytes, createdAtMs, frames, chunks };
}

export function encodePackHeader(h: PackHeader): Buffer {
  const w = new ByteWriter(64 + h.frames.length * 12 + h.chunks.length * 28);
  w.ascii(HEADER_MAGIC).u16(VERSION).u16(0);
  writeHeaderBody(w, h);
  return w.finish();
}

export function decodePackHeader(buf: Buffer, what: string): PackHeader {
  const r = new ByteReader(buf, what);
  r.magic(HEADER_MAGIC);
  r.version(VERSION);
  r.u16();
  const h = readHeaderBody(r);
  r.end();
  return h;
}

export function encodeTrailer(headerEnvelopeBytes: number): Buffer {
  const t = Buffer.alloc(PACK_TRAILER_BYTES);
  t.writeUInt32LE(headerEnvelopeBytes, 0);
  t.write(PACK_TRAILER_MAGIC, 4, 'ascii');
  return t;
}

/** Returns the header envelope's length from a pack's last 8 bytes. */
export function decodeTrailer(trailer: Buffer, packSize: number, what: string): number {
  if (trailer.length !== PACK_TRAILER_BYTES || trailer.toString('latin1', 4) !== PACK_TRAILER_MAGIC) {
    throw new LifeboatError('CORRUPT_OBJECT', `${what} has no pack trailer (truncated?)`, { details: { object: what } });
  }
  const len = trailer.readUInt32LE(0);
  if (len + PACK_TRAILER_BYTES > packSize) {
    throw new LifeboatError('CORRUPT_OBJECT', `${what} trailer names a header longer than the pack`, { details: { object: what } });
  }
  return len;
}

/** An index object lists the headers of packs written by one writer. */
export function encodeIndex(headers: readonly PackHeader[]): Buffer {
  const w = new ByteWriter();
  w.ascii(INDEX_MAGIC).u16(VERSION).u16(0).u32(headers.length);
  for (const h of headers) writeHeaderBody(w, h);
  return w.finish();
}

export function decodeIndex(buf: Buffer, what: string): PackHeader[] {
  const r = new ByteReader(buf, what);
  r.magic(INDEX_MAGIC);
  r.version(VERSION);
  r.u16();
  const n = r.u32();
  const out: PackHeader[] = [];
  for (let i = 0; i < n; i++) out.push(readHeaderBody(r));
  r.end();
  return out;
}
