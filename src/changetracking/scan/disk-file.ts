import { open, type FileHandle } from 'node:fs/promises';
import type { BlockSource, Extent } from '../../core/block-source.js';
import { LifeboatError } from '../../core/errors.js';
import { nativeSeek } from './native-seek.js';

/**
 * An image file or block device opened read-only for a full compare. Its size
 * is fixed when opened (the cut's size); extents() finds holes with
 * SEEK_DATA / SEEK_HOLE so they are compared without being read.
 */
export class DiskFile implements BlockSource {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly sizeBytes: number,
    readonly isBlockDevice: boolean,
  ) {}

  /** NOT_FOUND when the path does not exist, SOURCE_UNREADABLE when it cannot be opened or sized. */
  static async open(path: string): Promise<DiskFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new LifeboatError(code === 'ENOENT' ? 'NOT_FOUND' : 'SOURCE_UNREADABLE', `cannot open disk ${path}: ${code ?? String(err)}`, {
        cause: err,
        details: { path },
      });
    }
    try {
      const st = await handle.stat();
      if (st.isFile()) return new DiskFile(path, handle, st.size, false);
      if (!st.isBlockDevice()) throw new LifeboatError('SOURCE_UNREADABLE', `${path} is neither a regular file nor a block device`, { details: { path } });
      const seek = nativeSeek();
      if (!seek) throw new LifeboatError('SOURCE_UNREADABLE', `cannot size block device ${path}: the native addon is not built (npm rebuild)`, { details: { path } });
      return new DiskFile(path, handle, seek.seekEnd(handle.fd, 0), true);
    } catch (err) {
      await handle.close();
      if (err instanceof LifeboatError) throw err;
      throw new LifeboatError('SOURCE_UNREADABLE', `cannot size disk ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
    }
  }

  /** The open descriptor, for worker threads that read the disk directly. */
  get fd(): number {
    return this.handle.fd;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** Fills `buf` from `offset`; a short read (the disk shrank) is TRACKER_FAILED. */
  async readInto(buf: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.handle.read(buf, done, buf.length - done, offset + done));
      } catch (err) {
        throw new LifeboatError('TRACKER_FAILED', `read of ${this.path} at ${offset + done} failed: ${(err as Error).message}`, {
          cause: err,
          details: { path: this.path, offset: offset + done },
        });
      }
      if (n === 0) {
        throw new LifeboatError('TRACKER_FAILED', `${this.path} ended at ${offset + done}, expected ${this.sizeBytes} bytes (did it shrink?)`, {
          details: { path: this.path, offset: offset + done },
        });
      }
      done += n;
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const end = Math.min(offset + length, this.sizeBytes);
    const seek = this.isBlockDevice ? null : nativeSeek();
    if (!seek) return offset < end ? [{ offset, length: end - offset, zero: false }] : [];
    const out: Extent[] = [];
    let pos = offset;
    try {
      while (pos < end) {
        let data = seek.seekData(this.handle.fd, pos);
        if (data < 0 || data > end) data = end;
        if (data > pos) out.push({ offset: pos, length: data - pos, zero: true });
        if (data >= end) break;
        let hole = seek.seekHole(this.handle.fd, data);
        if (hole < 0 || hole > end) hole = end;
        out.push({ offset: data, length: hole - data, zero: false });
        pos = hole;
      }
    } catch (err) {
      throw new LifeboatError('TRACKER_FAILED', `cannot map the holes of ${this.path}: ${(err as Error).message}`, { cause: err, details: { path: this.path } });
    }
    return out;
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}
