import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Extent } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';
import type { WritableBlockTarget } from './writable-target.js';

/**
 * A writable NBD target over a local image file (or block device) of fixed size:
 * positional reads and writes, fdatasync for flush and FUA. Trim is not passed
 * on (it is advisory). Extents report the whole file as data.
 */
export class FileBlockTarget implements WritableBlockTarget {
  readonly writable = true;

  private constructor(
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
  ) {}

  /** Opens `path` read-write. Rejects with SOURCE_UNREADABLE when it cannot. */
  static async open(path: string): Promise<FileBlockTarget> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r+');
    } catch (err) {
      throw new LifeboatError('SOURCE_UNREADABLE', 'cannot open the image for writing', { cause: err, details: { path } });
    }
    try {
      const size = (await fh.stat()).size;
      return new FileBlockTarget(fh, size);
    } catch (err) {
      await fh.close();
      throw new LifeboatError('SOURCE_UNREADABLE', 'cannot stat the image', { cause: err, details: { path } });
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return readFully(this.fh, offset, length);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length, zero: false }];
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await writeFully(this.fh, offset, data);
    if (fua) await this.fh.datasync();
  }

  async flush(): Promise<void> {
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Reads exactly `length` bytes at `offset`; a short file is SOURCE_UNREADABLE. */
export async function readFully(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) {
      throw new LifeboatError('SOURCE_UNREADABLE', 'short read from a file', { details: { offset, length, got: done } });
    }
    done += bytesRead;
  }
  return buf;
}

/** Writes all of `data` at `offset` (positional writes may be short). */
export async function writeFully(fh: FileHandle, offset: number, data: Buffer): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
}
