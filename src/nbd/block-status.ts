import type { Extent } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from './protocol.js';
import type { StatusDescriptor } from './wire.js';

/** Upper bound on descriptors in one reply (512 KiB of payload); the client asks again for the rest. */
export const MAX_STATUS_DESCRIPTORS = 1 << 16;

/**
 * Turns a source's extents for [offset, offset+length) into base:allocation
 * descriptors: zero extents become HOLE|ZERO, neighbours with equal flags merge,
 * everything is clipped to the request. With `one`, only the first descriptor is
 * kept (NBD_CMD_FLAG_REQ_ONE). The result covers a non-empty prefix of the range.
 * Throws SOURCE_UNREADABLE when the extents break the BlockSource contract
 * (gaps, overlaps, or not covering the start of the range).
 */
export function toStatusDescriptors(
  extents: readonly Extent[],
  offset: number,
  length: number,
  one: boolean,
): StatusDescriptor[] {
  const end = offset + length;
  const out: Array<{ length: number; flags: number }> = [];
  let at = offset;
  for (const extent of extents) {
    if (at >= end) break;
    if (extent.length <= 0) continue;
    if (extent.offset !== at) {
      throw new LifeboatError('SOURCE_UNREADABLE', 'block source returned extents that do not tile the range', {
        details: { expectedOffset: at, extentOffset: extent.offset },
      });
    }
    const clipped = Math.min(extent.length, end - at);
    const flags = extent.zero ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === flags) last.length += clipped;
    else if (out.length < MAX_STATUS_DESCRIPTORS) out.push({ length: clipped, flags });
    else break;
    at += clipped;
  }
  if (out.length === 0) {
    throw new LifeboatError('SOURCE_UNREADABLE', 'block source returned no extents for a non-empty range', {
      details: { offset, length },
    });
  }
  return one ? out.slice(0, 1) : out;
}
