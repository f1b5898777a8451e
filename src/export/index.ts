import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { BlockSource } from '../core/block-source.js';
import { LifeboatError, isLifeboatError } from '../core/errors.js';
import type { ProgressFn } from './image-io.js';
import { writeQcow2 } from './qcow2.js';
import { writeRaw } from './raw.js';
import { VHD_SECTOR_BYTES } from './vhd-format.js';
import { writeVhdDynamic, writeVhdFixed } from './vhd.js';

/**
 * One entry point that writes a BlockSource as a disk image file
 * (docs/format/image-export.md).
 */

export const IMAGE_FORMATS = ['raw', 'qcow2', 'vhd', 'vhd-fixed'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** Azure's rule for uploaded (fixed) VHDs: the virtual size is a whole number of MiB. */
export const AZURE_VHD_ALIGN_BYTES = 1024 * 1024;

export interface ExportOptions {
  /** Checked at run time too: anything else throws USAGE. */
  readonly format: ImageFormat;
  /** Target file, or an existing block device (raw only). */
  readonly path: string;
  /** Guest bytes done and the source size; monotonic, ends at the source size. */
  readonly onProgress?: ProgressFn;
  /**
   * Raw to a block device only: the device already reads as zeros, so zero extents
   * are not written. Default false: every byte of the device range is written.
   */
  readonly devicePreZeroed?: boolean;
  /**
   * VHD only: round the virtual size up to a multiple of this many bytes (a
   * multiple of 512). Default 1 MiB for 'vhd-fixed' (what Azure requires) and 512
   * for 'vhd'. The padding reads as zeros.
   */
  readonly vhdAlignBytes?: number;
  /** Clock for VHD timestamps. Default: the system clock. */
  readonly now?: () => Date;
  /** Randomness for the VHD unique id and temp file names. Default: node:crypto. */
  readonly randomBytes?: (length: number) => Uint8Array;
}

/**
 * Writes `source` to `options.path` in the chosen format, streaming and sparse.
 *
 * A regular-file target is written to a temp file in the same directory, fsynced,
 * then renamed over the target: a reader sees the old file or the whole new image,
 * never a part; on failure the temp file is removed and the target is untouched.
 * A block-device target (raw only) is written in place and fsynced.
 *
 * Throws USAGE for an unknown format or a non-raw format to a block device,
 * TARGET_UNWRITABLE when the target cannot be created or written, SIZE_MISMATCH
 * when a device is smaller than the disk or the disk is too large for VHD; errors
 * from the source pass through.
 */
export async function exportImage(source: BlockSource, options: ExportOptions): Promise<void> {
  const format = checkFormat(options.format);
  const existing = await statOrUndefined(options.path);
  if (existing?.isBlockDevice() === true) {
    if (format !== 'raw') {
      throw new LifeboatError('USAGE', `a ${format} image cannot be written to a block device; use raw`, {
        details: { path: options.path, format },
      });
    }
    await exportToDevice(source, options);
    return;
  }
  if (existing !== undefined && !existing.isFile()) {
    throw new LifeboatError('TARGET_UNWRITABLE', 'the export target exists and is not a regular file or block device', {
      details: { path: options.path },
    });
  }
  await exportToFile(source, format, options);
}

function checkFormat(format: string): ImageFormat {
  const known: readonly string[] = IMAGE_FORMATS;
  if (!known.includes(format)) {
    throw new LifeboatError('USAGE', `unknown image format "${format}"; expected one of ${IMAGE_FORMATS.join(', ')}`, {
      details: { format },
    });
  }
  return format as ImageFormat;
}

async function exportToFile(source: BlockSource, format: ImageFormat, options: ExportOptions): Promise<void> {
  const random = options.randomBytes ?? cryptoRandomBytes;
  const dir = dirname(options.path);
  const temp = join(dir, `.${basename(options.path)}.${Buffer.from(random(6)).toString('hex')}.lbt-tmp`);
  const handle = await openTarget(temp, 'wx', options.path);
  try {
    await writeFormat(source, format, handle, options, random);
    await targetStep(() => handle.sync(), 'fsync', options.path);
    await handle.close();
    await targetStep(() => rename(temp, options.path), 'rename', options.path);
  } catch (err) {
    await handle.close().catch(() => undefined); // already closed after a failed rename
    await unlink(temp).catch(() => undefined); // the temp file is ours; a failure here leaves only litter
    throw err;
  }
  await syncDirectory(dir, options.path);
}

async function writeFormat(
  source: BlockSource,
  format: ImageFormat,
  handle: FileHandle,
  options: ExportOptions,
  random: (length: number) => Uint8Array,
): Promise<void> {
  const onProgress = options.onProgress;
  switch (format) {
    case 'raw':
      return writeRaw(source, handle, { target: 'file', onProgress });
    case 'qcow2':
      return writeQcow2(source, handle, { onProgress });
    case 'vhd':
    case 'vhd-fixed': {
      const vhd = {
        alignBytes: options.vhdAlignBytes ?? (format === 'vhd' ? VHD_SECTOR_BYTES : AZURE_VHD_ALIGN_BYTES),
        now: (options.now ?? (() => new Date()))(),
        uniqueId: uuidV4(random(16)),
        onProgress,
      };
      return format === 'vhd' ? writeVhdDynamic(source, handle, vhd) : writeVhdFixed(source, handle, vhd);
    }
  }
}

/** Marks 16 random bytes as an RFC 4122 version 4 UUID, as Windows tools write it. */
function uuidV4(bytes: Uint8Array): Buffer {
  if (bytes.length !== 16) throw new LifeboatError('INTERNAL', 'randomBytes returned the wrong length');
  const id = Buffer.from(bytes);
  id[6] = ((id[6] ?? 0) & 0x0f) | 0x40;
  id[8] = ((id[8] ?? 0) & 0x3f) | 0x80;
  return id;
}

async function exportToDevice(source: BlockSource, options: ExportOptions): Promise<void> {
  const handle = await openTarget(options.path, 'r+', options.path);
  try {
    await checkDeviceSize(handle, source.sizeBytes, options.path);
    await writeRaw(source, handle, { target: 'device', preZeroed: options.devicePreZeroed === true, onProgress: options.onProgress });
    await targetStep(() => handle.sync(), 'fsync', options.path);
  } finally {
    await handle.close();
  }
}

/** stat() reports 0 bytes for block devices, so probe the last byte the disk needs instead. */
async function checkDeviceSize(handle: FileHandle, sizeBytes: number, path: string): Promise<void> {
  if (sizeBytes === 0) return;
  const { bytesRead } = await targetStep(() => handle.read(Buffer.alloc(1), 0, 1, sizeBytes - 1), 'read', path);
  if (bytesRead !== 1) {
    throw new LifeboatError('SIZE_MISMATCH', 'the target device is smaller than the disk', { details: { path, sizeBytes } });
  }
}

async function openTarget(path: string, flags: string, target: string): Promise<FileHandle> {
  return targetStep(() => open(path, flags, 0o644), 'open', target);
}

async function syncDirectory(dir: string, target: string): Promise<void> {
  const handle = await openTarget(dir, 'r', target);
  try {
    await targetStep(() => handle.sync(), 'fsync directory', target);
  } finally {
    await handle.close();
  }
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LifeboatError('TARGET_UNWRITABLE', `cannot inspect the export target: ${String(err)}`, { cause: err, details: { path } });
  }
}

async function targetStep<T>(step: () => Promise<T>, what: string, path: string): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (isLifeboatError(err)) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new LifeboatError('TARGET_UNWRITABLE', `${what} failed for the export target: ${message}`, { cause: err, details: { path } });
  }
}

export type { ProgressFn } from './image-io.js';
export { vhdGeometry, chsBytes } from './vhd-format.js';
