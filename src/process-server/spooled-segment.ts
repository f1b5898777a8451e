import { LifeboatError } from '../core/errors.js';
import type { JournalSegment } from '../format/segment.js';
import { decodeOneFrame } from '../protocol/frame.js';
import { parseSegment } from '../protocol/messages.js';

/**
 * The journal segment a spool file holds, checked in full (frame, header,
 * length, SHA-256) and against the disk, generation and sequence its place in
 * the spool names. A file that fails is CORRUPT_OBJECT: it is kept, never
 * uploaded.
 */
export function spooledSegment(file: Buffer, expected: { disk: string; generation: number; sequence: number; path: string }): JournalSegment {
  let header;
  let body: Buffer;
  try {
    const frame = decodeOneFrame(file);
    header = parseSegment(frame);
    body = frame.body;
  } catch (err) {
    throw new LifeboatError('CORRUPT_OBJECT', `spool file ${expected.path} is damaged: ${(err as Error).message}`, { cause: err, details: { object: expected.path } });
  }
  if (header.disk !== expected.disk || header.generation !== expected.generation || header.sequence !== expected.sequence) {
    throw new LifeboatError('CORRUPT_OBJECT', `spool file ${expected.path} holds segment ${header.disk}/${header.generation}/${header.sequence}`, {
      details: { object: expected.path },
    });
  }
  let at = 0;
  const extents = header.extents.map((e) => {
    const data = body.subarray(at, at + e.length);
    at += e.length;
    return { offset: e.offset, data };
  });
  return {
    ...(header.flags === 0 ? {} : { flags: header.flags }),
    generation: header.generation,
    sequence: header.sequence,
    diskSizeBytes: header.diskSizeBytes,
    createdAtMs: header.capturedAtMs,
    extents,
  };
}
