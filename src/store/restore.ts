import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { LifeboatError } from '../core/errors.js';
import type { BlockSource } from '../core/block-source.js';
import type { Progress } from './backup.js';
import { nativeSeek } from './native.js';

export interface WriteDiskOptions {
  /** Windows fetched and written at once. */
  readonly parallel?: number;
  readonly windowBytes?: number;
  /** The target device is known to read as zeros: skip writing zero ranges to it too. */
  readonly assumeZeroed?: boolean;
  readonly onProgress?: (p: Progress) => void;
}

/**
 * Writes a BlockSource to a file or block device. A file is written to a
 * temporary name beside the target, sparse (zero ranges are never written),
 * fsynced, then renamed into place, so the target is either the old file or the
 * complete image. A device is written in place: it must be at least as large as
 * the disk, and its zero ranges are written unless assumeZeroed.
 */
export async function writeDisk(source: BlockSource, target: string, options: WriteDiskOptions = {}): Promise<{ bytesWritten: number }> {
  const existing = await stat(target).catch(() => undefined);
  const isDevice = existing?.isBlockDevice() ?? false;
  const tmp = isDevice ? target : join(dirname(target), `.${basename(target)}.lifeboat-tmp-${process.pid}`);
  let handle: FileHandle;
  try {
    handle = await open(tmp, isDevice ? 'r+' : 'w');
  } catch (err) {
    throw new LifeboatError('TARGET_UNWRITABLE', `cannot open ${target} for writing: ${(err as Error).message}`, { cause: err, details: { target } });
  }
  try {
    if (isDevice) {
      const size = nativeSeek()?.seekEnd(handle.fd, 0) ?? 0;
      if (size < source.sizeBytes) {
        throw new LifeboatError('SIZE_MISMATCH', `device ${target} has ${size} bytes; the disk needs ${source.sizeBytes}`, { details: { target } });
      }
    } else await handle.truncate(source.sizeBytes);
    const windowBytes = options.windowBytes ?? 4 * 2 ** 20;
    const windows: { offset: number; length: number }[] = [];
    for (let o = 0; o < source.sizeBytes; o += windowBytes) windows.push({ offset: o, length: Math.min(windowBytes, source.sizeBytes - o) });
    let next = 0;
    let done = 0;
    let bytesWritten = 0;
    const writeZeros = isDevice && !options.assumeZeroed;
    const lane = async (): Promise<void> => {
      while (next < windows.length) {
        const w = windows[next++] as { offset: number; length: number };
        const extents = await source.extents(w.offset, w.length);
        const anyData = extents.some((e) => !e.zero);
        const data = anyData ? await source.read(w.offset, w.length) : undefined;
        for (const e of extents) {
          if (e.zero && !writeZeros) continue;
          const part = data ? data.subarray(e.offset - w.offset, e.offset - w.offset + e.length) : Buffer.alloc(e.length);
          await writeFully(handle, part, e.offset, target);
          bytesWritten += e.length;
        }
        done += w.length;
        options.onProgress?.({ phase: 'restore', doneBytes: done, totalBytes: source.sizeBytes });
      }
    };
    await Promise.all(Array.from({ length: options.parallel ?? 4 }, lane));
    await handle.sync();
    await handle.close();
    if (!isDevice) await rename(tmp, target);
    return { bytesWritten };
  } catch (err) {
    await handle.close().catch(() => undefined);
    if (!isDevice) await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

async function writeFully(handle: FileHandle, buf: Buffer, position: number, target: string): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    try {
      const { bytesWritten } = await handle.write(buf, off, buf.length - off, position + off);
      off += bytesWritten;
    } catch (err) {
      throw new LifeboatError('TARGET_UNWRITABLE', `write to ${target} failed: ${(err as Error).message}`, { cause: err, details: { target } });
    }
  }
}
