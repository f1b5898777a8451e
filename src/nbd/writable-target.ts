import type { BlockSource } from '../core/block-source.js';

/**
 * A disk the NBD server may write to. Exports are read-only unless their source
 * is a WritableBlockTarget (the `writable: true` marker is an explicit opt-in, so
 * a recovery point can never become writable by having a method called write).
 *
 * Contract (docs/nbd.md, "Writable exports"):
 * - Ranges handed in always lie inside [0, sizeBytes) and are non-empty; the
 *   server checks that before calling.
 * - `write` resolves once the data is visible to every later `read` (from any
 *   connection); with `fua` it resolves only once the data is also durable.
 * - `flush` resolves once every write that resolved before flush was called is
 *   durable. It covers writes from every connection (the server advertises
 *   NBD_FLAG_CAN_MULTI_CONN on that promise).
 * - Calls may run concurrently; overlapping writes in flight at the same time
 *   have no defined order (as in NBD itself).
 * - A rejection becomes an NBD error reply (EIO, or ENOSPC for a LifeboatError
 *   with code SIZE_MISMATCH); the connection stays open.
 */
export interface WritableBlockTarget extends BlockSource {
  readonly writable: true;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  /** Makes the range read as zeros. Absent: the server writes zero buffers through write(). */
  writeZeroes?(offset: number, length: number, fua: boolean): Promise<void>;
  /**
   * The client no longer needs the range (NBD_CMD_TRIM). Advisory: after a trim the
   * range may read as anything. Absent: trim is accepted and does nothing.
   */
  trim?(offset: number, length: number, fua: boolean): Promise<void>;
}

export function isWritableTarget(source: BlockSource): source is WritableBlockTarget {
  return (source as Partial<WritableBlockTarget>).writable === true;
}
