import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { LifeboatError } from '../core/errors.js';
import type { Progress } from './backup.js';
import { nativeSeek } from '../io/native-seek.js';
import type { PointReader } from './point-reader.js';

export interface WriteDiskOptions {
  /** The target device is known to read as zeros: skip writing zero ranges to it too. */
  readonly assumeZeroed?: boolean;
  readonly onProgress?: (p: Progress) => void;
}

const ZEROS = Buffer.alloc(4 * 2 ** 20);

/**
 * Restores a recovery point to a file or block device. A file is written to a
 * temporary name beside the target, sparse (zero ranges are never written),
 * fsynced, then renamed into place, so the target is either the old file or the
 * complete image. A device is written in place: it must be at least as large as
 * the disk, and its zero ranges are written unless assumeZeroed.
 */
export async function writeDisk(reader: PointReader, target: string, options: WriteDiskOptions = {}): Promise<{ bytesWritten: number }> {
  const existing = await stat(target).catch(() => undefined);
  const isDevice = existing?.isBlockDevice() ?? false;
  reader.checkComplete(); // a point with a missing chunk fails before anything is written
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
      if (size < reader.sizeBytes) {
        throw new LifeboatError('SIZE_MISMATCH', `device ${target} has ${size} bytes; the disk needs ${reader.sizeBytes}`, { details: { target } });
      }
    } else await handle.truncate(reader.sizeBytes);
    const zeroExtents = (await reader.extents(0, reader.sizeBytes)).filter((e) => e.zero);
    const dataBytes = reader.sizeBytes - zeroExtents.reduce((n, e) => n + e.length, 0);
    let zeroBytes = 0;
    if (isDevice && !options.assumeZeroed) {
      for (const e of zeroExtents) {
        for (let o = 0; o < e.length; o += ZEROS.length) await writeFully(handle, ZEROS.subarray(0, Math.min(ZEROS.length, e.length - o)), e.offset + o, target);
        zeroBytes += e.length;
      }
    }
    const written = await reader.writeTo(handle.fd, {
      onProgress: (done) => options.onProgress?.({ phase: 'restore', doneBytes: Math.min(done, dataBytes), totalBytes: dataBytes }),
    });
    options.onProgress?.({ phase: 'restore', doneBytes: dataBytes, totalBytes: dataBytes });
    await handle.sync();
    await handle.close();
    if (!isDevice) await rename(tmp, target);
    return { bytesWritten: written + zeroBytes };
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
