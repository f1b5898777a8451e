import { ByteReader, ByteWriter } from './binary.js';

/**
 * A journal segment: changed extents of one disk, numbered within a source
 * generation. Layout (then compressed and sealed, AAD binding disk, generation
 * and sequence so a segment cannot be replayed under another number):
 *
 *   "LBJS" | u16 version | u16 flags | u32 generation | u64 sequence | u64 diskSizeBytes
 *   | u64 createdAtMs | u32 extentCount | extentCount x (u64 offset | u32 length) | data of every extent in order
 *
 * A source ships one consistent cut of its disk as one or more segments: every
 * segment but the last carries SEGMENT_PARTIAL, every one but the first carries
 * SEGMENT_CONTINUES. A point is made only at a cut's end; a cut left unfinished
 * (the source restarted mid-cut) is abandoned when the next cut begins, and its
 * segments are never applied. Segments written before flags existed carry 0:
 * each is a whole cut.
 */
const MAGIC = 'LBJS';
const VERSION = 1;

/** More segments of the same cut follow: no point may end at this segment. */
export const SEGMENT_PARTIAL = 1;
/** The cut this segment ends was taken while the source's filesystems were frozen (app-consistent). */
export const SEGMENT_APP_CONSISTENT = 2;
/** This segment continues the cut of the previous sequence number. */
export const SEGMENT_CONTINUES = 4;
const KNOWN_FLAGS = SEGMENT_PARTIAL | SEGMENT_APP_CONSISTENT | SEGMENT_CONTINUES;

export interface SegmentExtent {
  readonly offset: number;
  readonly data: Buffer;
}

export interface JournalSegment {
  /** SEGMENT_PARTIAL | SEGMENT_APP_CONSISTENT | SEGMENT_CONTINUES; absent = 0. */
  readonly flags?: number;
  readonly generation: number;
  readonly sequence: number;
  readonly diskSizeBytes: number;
  /** When the source captured the cut (ms since the epoch). */
  readonly createdAtMs: number;
  readonly extents: readonly SegmentExtent[];
}

export function encodeSegment(s: JournalSegment): Buffer {
  const dataBytes = s.extents.reduce((n, e) => n + e.data.length, 0);
  const w = new ByteWriter(48 + s.extents.length * 12 + dataBytes);
  w.ascii(MAGIC).u16(VERSION).u16(s.flags ?? 0).u32(s.generation).u64(s.sequence).u64(s.diskSizeBytes).u64(s.createdAtMs);
  w.u32(s.extents.length);
  for (const e of s.extents) w.u64(e.offset).u32(e.data.length);
  for (const e of s.extents) w.bytes(e.data);
  return w.finish();
}

export function decodeSegment(buf: Buffer, what: string): JournalSegment {
  const r = new ByteReader(buf, what);
  r.magic(MAGIC);
  r.version(VERSION);
  const flags = r.u16();
  if ((flags & ~KNOWN_FLAGS) !== 0) r.fail(`unknown flags 0x${flags.toString(16)}`);
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
  return { ...(flags === 0 ? {} : { flags }), generation, sequence, diskSizeBytes, createdAtMs, extents };
}
