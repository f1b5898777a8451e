/**
 * A read-only disk image of known size, the shape shared by a recovery point
 * opened from the store, a local image file, and anything served over NBD or
 * exported to an image format.
 */
export interface Extent {
  readonly offset: number;
  readonly length: number;
  /** True when the range reads as zeros (a hole, or a zero chunk in a point). */
  readonly zero: boolean;
}

export interface BlockSource {
  readonly sizeBytes: number;
  /** Reads exactly `length` bytes at `offset`; the range must lie inside the disk. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Describes [offset, offset+length) as consecutive extents that cover it exactly,
   * marking the ranges known to read as zeros. A source that knows nothing
   * returns one non-zero extent.
   */
  extents(offset: number, length: number): Promise<Extent[]>;
  close(): Promise<void>;
}
