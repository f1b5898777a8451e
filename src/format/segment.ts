import { ByteReader, ByteWriter } from './binary.js';

/**
 * A journal segment: changed extents of one disk, numbered within a source
 * generation. Layout (then compressed and sealed, AAD binding disk, generation
 * and sequence so a segment cannot be replayed under another number):
 *
 *   "LBJS" | u16 version | u16 0 | u32 generation | u64 sequence | u64 diskSizeBytes
 *   | u64 createdAtMs | u32 extentCount | extentCount x (u64 offset | u32 length) | data of every extent in order
 */
const MAGIC = 'LBJS';
const VERSION = 1;

export interface SegmentExtent {
  readonly offset: number;
  readonly data: Buffer;
}

export interface JournalSegment {
  readonly generation: number;
  readonly sequence: number;
  readonly diskSizeBytes: number;
  readonly createdAtMs: number;
  readonly extents: readonly SegmentExtent[];
}

export function encodeSegment(s: JournalSegment): Buffer {
  const dataBytes = s.extents.reduce((n, e) => n + e.data.length, 0);
  const w = new ByteWriter(48 + s.extents.length * 12 + dataBytes);
  w.ascii(MAGIC).u16(VERSION).u16(0).u32(s.generation).u64(s.sequence).u64(s.diskSizeBytes).u64(s.createdAtMs);
  w.u32(s.extents.length);
  for (const e of s.extents) w.u64(e.offset).u32(e.data.length);
  for (const e of s.extents) w.bytes(e.data);
  return w.finish();
}

export function decodeSegment(buf: Buffer, what: string): JournalSegment {
  const r = new ByteReader(buf, what);
  r.magic(MAGIC);
  r.version(VERSION);
  r.u16();
  const generation = r.u32();
  const sequence = r.u64();
  const diskSizeBytes = r.u64();
  const createdAtMs = r.u64();
  const n = r.u32();
  const heads: { offset: number; length: number }[] = [];
  for (let i = 0; i < n; i++) {
    const offset = r.u64();
    const length = r.u32();
    if (offset + length > diskSizeBytes) r.fail(`extent ${i} ends past the disk`);
    heads.push({ offset, length });
  }
  const extents = heads.map((h) => ({ offset: h.offset, data: Buffer.from(r.bytes(h.length)) }));
  r.end();
  return { generation, sequence, diskSizeBytes, createdAtMs, extents };
}
