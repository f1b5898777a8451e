import type { ChangedExtent } from '../changetracking/tracker.js';
import { SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../format/segment.js';

/** The most data one SEGMENT frame carries (docs/replication.md, "Wire protocol"). */
export const MAX_SEGMENT_DATA_BYTES = 16 * 2 ** 20;

export interface SegmentExtent {
  readonly offset: number;
  readonly data: Buffer;
}

/** One segment's worth of a cut, before it is numbered. */
export interface CutPiece {
  /** Position within the cut, from 0. */
  readonly index: number;
  /** No piece follows: the cut ends here. */
  readonly last: boolean;
  readonly extents: readonly SegmentExtent[];
  readonly dataBytes: number;
}

/**
 * Splits a cut's changes into pieces of at most `maxBytes` of data, extents in
 * the order the tracker gave them (ascending, not overlapping); an extent that
 * does not fit is split at the boundary. One piece is always held back so the
 * last can be known as last. A cut with no changes is one empty piece: it still
 * ends a cut, so the replica gets a fresh point (and a fresh RPO) on an idle disk.
 */
export async function* piecesOf(changes: AsyncIterable<ChangedExtent>, maxBytes = MAX_SEGMENT_DATA_BYTES): AsyncGenerator<CutPiece> {
  let index = 0;
  let current: SegmentExtent[] = [];
  let bytes = 0;
  let held: { extents: SegmentExtent[]; bytes: number } | undefined;
  const close = function* (): Generator<CutPiece> {
    if (held) yield { index: index++, last: false, extents: held.extents, dataBytes: held.bytes };
    held = { extents: current, bytes };
    current = [];
    bytes = 0;
  };
  for await (const e of changes) {
    let offset = e.offset;
    let data = e.data;
    while (data.length > 0) {
      if (bytes === maxBytes) yield* close();
      const take = Math.min(data.length, maxBytes - bytes);
      current.push({ offset, data: take === data.length ? data : data.subarray(0, take) });
      bytes += take;
      offset += take;
      data = data.subarray(take);
    }
  }
  if (current.length > 0 || !held) yield* close();
  const last = held as { extents: SegmentExtent[]; bytes: number };
  yield { index, last: true, extents: last.extents, dataBytes: last.bytes };
}

/**
 * The flags of a cut's piece: every piece but the first continues the cut,
 * every piece but the last is partial, and the last carries app consistency
 * when the cut was taken frozen.
 */
export function pieceFlags(piece: Pick<CutPiece, 'index' | 'last'>, appConsistent: boolean): number {
  let flags = 0;
  if (piece.index > 0) flags |= SEGMENT_CONTINUES;
  if (!piece.last) flags |= SEGMENT_PARTIAL;
  if (piece.last && appConsistent) flags |= SEGMENT_APP_CONSISTENT;
  return flags;
}
