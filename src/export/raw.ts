import type { FileHandle } from 'node:fs/promises';
import type { BlockSource } from '../core/block-source.js';
import { walkExtents } from './extent-walk.js';
import { Progress, copyRange, truncateTo, writeZeros, type ProgressFn } from './image-io.js';

/**
 * Raw image writer: the disk's bytes, byte for byte, nothing else
 * (docs/format/image-export.md).
 */
export interface RawWriteOptions {
  /**
   * 'file': the target is a fresh regular file. Zero extents are skipped and the
   * file is truncated to the disk size at the end, so they stay holes.
   * 'device': the target is a block device (or anything that cannot hold holes and
   * may contain old data). Zero extents are written as zeros unless `preZeroed`.
   * The target is never truncated.
   */
  readonly target: 'file' | 'device';
  /**
   * Only for 'device': the caller promises the device already reads as zeros
   * (a fresh thin LUN, a discarded volume), so zero extents are skipped there too.
   */
  readonly preZeroed?: boolean;
  readonly onProgress?: ProgressFn;
}

/**
 * Writes `source` as a raw image through `handle`, reading at most one copy chunk
 * at a time. Does not fsync or close the handle. Source read errors pass through;
 * write errors throw TARGET_UNWRITABLE.
 */
export async function writeRaw(source: BlockSource, handle: FileHandle, options: RawWriteOptions): Promise<void> {
  const progress = new Progress(source.sizeBytes, options.onProgress);
  const fillZeros = options.target === 'device' && options.preZeroed !== true;
  for await (const e of walkExtents(source)) {
    if (!e.zero) {
      await copyRange(source, handle, e.offset, e.length, e.offset, progress);
    } else if (fillZeros) {
      await writeZeros(handle, e.offset, e.length, (n) => progress.advanceTo(e.offset + n));
    } else {
      progress.advanceTo(e.offset + e.length);
    }
  }
  if (options.target === 'file') await truncateTo(handle, source.sizeBytes);
  progress.finish();
}
