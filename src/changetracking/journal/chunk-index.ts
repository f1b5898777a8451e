/**
 * Where the content of each changed 4 KiB chunk is, as of the end of a set of
 * change logs: at a byte position inside a log (the chunk was wholly covered by
 * a WRITE record), zeros (wholly covered by a ZERO record), or "in the image as
 * of the cut" (some record covered it only in part; the cut reads the whole chunk
 * through its copy-on-write snapshot). Later records replace earlier entries.
 */
export const CHUNK_BYTES = 4096;
export const LOC_ZERO = -1;
export const LOC_SNAPSHOT = -2;

/** chunk number → byte position in one log file, LOC_ZERO or LOC_SNAPSHOT. */
export type ChunkIndex = Map<number, number>;

/**
 * Enters one record into `index`. `payloadPosition` is where the record's data
 * starts in its log, or null for a ZERO record. The disk's last chunk may be
 * short; a record reaching the disk's end covers it wholly.
 */
export function indexRecord(index: ChunkIndex, sizeBytes: number, offset: number, length: number, payloadPosition: number | null): void {
  const end = offset + length;
  const last = Math.ceil(end / CHUNK_BYTES) - 1;
  for (let c = Math.floor(offset / CHUNK_BYTES); c <= last; c++) {
    const start = c * CHUNK_BYTES;
    const stop = Math.min(sizeBytes, start + CHUNK_BYTES);
    if (offset <= start && end >= stop) index.set(c, payloadPosition === null ? LOC_ZERO : payloadPosition + (start - offset));
    else index.set(c, LOC_SNAPSHOT);
  }
}

/** Chunks a snapshot must keep as of the cut: those whose content is read from the image. */
export function snapshotChunks(index: ReadonlyMap<number, number | { readonly pos: number }>): Set<number> {
  const out = new Set<number>();
  for (const [c, loc] of index) if ((typeof loc === 'number' ? loc : loc.pos) === LOC_SNAPSHOT) out.add(c);
  return out;
}
