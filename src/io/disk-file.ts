import { open, type FileHandle } from 'node:fs/promises';
import { LifeboatError } from '../core/errors.js';
import type { BlockSource, Extent } from '../core/block-source.js';
import { nativeSeek } from './native-seek.js';

/**
 * An image file or block device opened read-only as a BlockSource. extents()
 * uses SEEK_DATA / SEEK_HOLE, so a sparse image's holes are known without
 * reading them; block devices and filesystems without hole support report all
 * data.
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
      throw new LifeboatError(code === 'ENOENT' ? 'NOT_FOUND' : 'SOURCE_UNREADABLE', `cannot open source ${path}: ${code ?? String(err)}`, {
        cause: err,
        details: { path },
      });
    }
    const st = await handle.stat();
    let size = st.size;
    if (st.isBlockDevice()) {
      const seek = nativeSeek();
      if (!seek) {
        await handle.close();
        throw new LifeboatError('SOURCE_UNREADABLE', `cannot size block device ${path}: the native addon is not built (npm rebuild)`);
      }
      size = seek.seekEnd(handle.fd, 0);
    } else if (!st.isFile()) {
      await handle.close();
      throw new LifeboatError('SOURCE_UNREADABLE', `${path} is neither a regular file nor a block device`, { details: { path } });
    }
    return new DiskFile(path, handle, size, st.isBlockDevice());
  }

  /** The open file descriptor, for worker threads that read the source directly. */
  get fd(): number {
    return this.handle.fd;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** Fills `buf` from `offset`; a short read means the source shrank or vanished. */
  async readInto(buf: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.handle.read(buf, done, buf.length - done, offset + done));
      } catch (err) {
        throw new LifeboatError('SOURCE_UNREADABLE', `read of ${this.path} at ${offset + done} failed: ${(err as Error).message}`, {
          cause: err,
          details: { path: this.path, offset: offset + done },
        });
      }
      if (n === 0) {
        throw new LifeboatError('SOURCE_UNREADABLE', `${this.path} ended at ${offset + done}, expected ${this.sizeBytes} bytes (did it shrink?)`, {
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
    const now = await this.handle.stat();
    if (now.size < this.sizeBytes) {
      throw new LifeboatError('SOURCE_UNREADABLE', `${this.path} shrank from ${this.sizeBytes} to ${now.size} bytes while being read`, {
        details: { path: this.path },
      });
    }
    const out: Extent[] = [];
    let pos = offset;
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
    return out;
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}
