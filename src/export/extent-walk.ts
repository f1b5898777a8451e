import type { BlockSource, Extent } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';

/**
 * Walking a BlockSource's extent map window by window, so that memory stays bounded
 * by one window's extents however large or fragmented the disk is. Every writer in
 * src/export reads the map through here, so a source that breaks the extents()
 * contract (gaps, overlaps, ranges outside the request) fails loudly in one place.
 */

/** Default window: a multiple of every unit size the writers use (64 KiB, 2 MiB). */
export const DEFAULT_WINDOW_BYTES = 256 * 1024 * 1024;

/**
 * Yields extents covering [0, source.sizeBytes) in order, one window at a time,
 * adjacent extents of the same kind merged within a window. Extents never cross a
 * window boundary. Throws INTERNAL when the source's extents do not cover a window
 * exactly.
 */
export async function* walkExtents(
  source: BlockSource,
  windowBytes: number = DEFAULT_WINDOW_BYTES,
): AsyncGenerator<Extent> {
  for (let start = 0; start < source.sizeBytes; start += windowBytes) {
    const length = Math.min(windowBytes, source.sizeBytes - start);
    yield* checkedWindow(await source.extents(start, length), start, length);
  }
}

function checkedWindow(extents: readonly Extent[], start: number, length: number): Extent[] {
  const out: Extent[] = [];
  let at = start;
  for (const e of extents) {
    if (e.length === 0) continue;
    if (e.offset !== at || e.length < 0 || e.offset + e.length > start + length) {
      throw new LifeboatError('INTERNAL', 'block source returned extents that do not cover the requested range', {
        details: { windowOffset: start, windowLength: length, expectedOffset: at, extent: { ...e } },
      });
    }
    const last = out[out.length - 1];
    if (last !== undefined && last.zero === e.zero) {
      out[out.length - 1] = { offset: last.offset, length: last.length + e.length, zero: e.zero };
    } else {
      out.push({ offset: e.offset, length: e.length, zero: e.zero });
    }
    at += e.length;
  }
  if (at !== start + length) {
    throw new LifeboatError('INTERNAL', 'block source returned extents that stop short of the requested range', {
      details: { windowOffset: start, windowLength: length, coveredTo: at },
    });
  }
  return out;
}

/**
 * A run of consecutive allocation units (qcow2 clusters, VHD blocks) that hold at
 * least one byte of non-zero extent, with those non-zero extents clipped to the run.
 */
export interface AllocatedRun {
  readonly firstUnit: number;
  readonly unitCount: number;
  /** Non-zero extents inside the run, ascending, clipped to the disk. */
  readonly data: readonly Extent[];
}

/**
 * Yields the allocated unit runs of the disk in ascending order. A unit is
 * allocated when any byte of it lies in a non-zero extent; fully zero units are
 * never part of a run. Runs do not cross window boundaries (the window must be a
 * multiple of `unitBytes`), which bounds each run's `data` list.
 */
export async function* allocatedRuns(
  source: BlockSource,
  unitBytes: number,
  windowBytes: number = DEFAULT_WINDOW_BYTES,
): AsyncGenerator<AllocatedRun> {
  if (windowBytes % unitBytes !== 0) {
    throw new LifeboatError('INTERNAL', 'extent window must be a multiple of the allocation unit', {
      details: { windowBytes, unitBytes },
    });
  }
  let current: { window: number; firstUnit: number; endUnit: number; data: Extent[] } | undefined;
  for await (const e of walkExtents(source, windowBytes)) {
    if (e.zero) continue;
    const window = Math.floor(e.offset / windowBytes);
    const first = Math.floor(e.offset / unitBytes);
    const end = Math.ceil((e.offset + e.length) / unitBytes);
    if (current !== undefined && current.window === window && first <= current.endUnit) {
      current.endUnit = Math.max(current.endUnit, end);
      current.data.push(e);
      continue;
    }
    if (current !== undefined) yield toRun(current);
    current = { window, firstUnit: first, endUnit: end, data: [e] };
  }
  if (current !== undefined) yield toRun(current);
}

function toRun(r: { firstUnit: number; endUnit: number; data: Extent[] }): AllocatedRun {
  return { firstUnit: r.firstUnit, unitCount: r.endUnit - r.firstUnit, data: r.data };
}
