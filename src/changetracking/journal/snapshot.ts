import type { FileHandle } from 'node:fs/promises';
import { CHUNK_BYTES } from './chunk-index.js';

/**
 * A copy-on-write view of the image as it was at a cut, for the chunks the cut
 * must read from the image (chunks only partly covered by logged writes, or
 * every chunk for a full compare, read in any order). Writes after the cut call beforeWrite()
 * before touching the image: the first write to a protected chunk that the cut
 * has not read yet copies the chunk's old content aside. The cut reads chunks
 * with read(); a chunk copied aside is served from the copy, and a chunk read
 * is no longer protected.
 *
 * Why no lock is needed: a copy is stored before the write that made it touches
 * the image, and read() looks for a copy only after its own image read has
 * completed. So if that image read saw a post-cut write, the copy was already
 * there; if no copy is there, no post-cut write had started on the chunk. A
 * second writer to a chunk waits for the first one's copy before writing.
 *
 * Copies are held in memory: the cost of a cut is bounded by the protected
 * chunks overwritten before the cut reads them.
 */
export class Snapshot {
  private readonly copies = new Map<number, Buffer>();
  private readonly copying = new Map<number, Promise<void>>();
  /** 'all' mode: chunks below this were read already... */
  private cursor = 0;
  /** ...and so were these ranges beyond it (reads may complete out of order). */
  private ahead: Array<[number, number]> = [];
  private released = false;

  constructor(
    private readonly image: FileHandle,
    private readonly sizeBytes: number,
    /** The protected chunks, or 'all' for a full compare (read in ascending order). */
    private readonly protect: Set<number> | 'all',
  ) {}

  private isProtected(c: number): boolean {
    if (this.released) return false;
    if (this.protect !== 'all') return this.protect.has(c);
    return c >= this.cursor && !this.ahead.some(([from, to]) => c >= from && c < to);
  }

  /**
   * Chunks [from, to) are no longer needed as of the cut (read, or known to be a
   * hole then: writes never punch holes, so a hole now was a hole at the cut).
   */
  consume(from: number, to: number): void {
    if (this.protect !== 'all') {
      for (let c = from; c < to; c++) this.protect.delete(c);
      return;
    }
    for (let c = from; c < to; c++) this.copies.delete(c);
    this.ahead.push([from, to]);
    this.ahead.sort((a, b) => a[0] - b[0]);
    while (this.ahead.length > 0 && (this.ahead[0] as [number, number])[0] <= this.cursor) {
      this.cursor = Math.max(this.cursor, (this.ahead.shift() as [number, number])[1]);
    }
  }

  /** Called before a write of [offset, offset+length) reaches the image. */
  async beforeWrite(offset: number, length: number): Promise<void> {
    if (this.released) return;
    const waits: Promise<void>[] = [];
    const last = Math.ceil((offset + length) / CHUNK_BYTES) - 1;
    let runStart = -1;
    const startRun = (from: number, to: number): void => {
      const p = this.copyRun(from, to);
      for (let c = from; c < to; c++) this.copying.set(c, p);
      waits.push(p);
    };
    for (let c = Math.floor(offset / CHUNK_BYTES); c <= last; c++) {
      const needs = this.isProtected(c) && !this.copies.has(c);
      const pending = needs ? this.copying.get(c) : undefined;
      if (needs && pending === undefined) {
        if (runStart < 0) runStart = c;
        continue;
      }
      if (runStart >= 0) startRun(runStart, c);
      runStart = -1;
      if (pending !== undefined) waits.push(pending);
    }
    if (runStart >= 0) startRun(runStart, last + 1);
    await Promise.all(waits);
  }

  private async copyRun(from: number, to: number): Promise<void> {
    const data = await this.readImage(from, to);
    for (let c = from; c < to; c++) {
      this.copying.delete(c);
      if (this.isProtected(c)) {
        const at = (c - from) * CHUNK_BYTES;
        this.copies.set(c, Buffer.from(data.subarray(at, at + CHUNK_BYTES)));
      }
    }
  }

  private async readImage(from: number, to: number): Promise<Buffer> {
    const start = from * CHUNK_BYTES;
    const length = Math.min(this.sizeBytes, to * CHUNK_BYTES) - start;
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.image.read(buf, done, length - done, start + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf;
  }

  /** The content of chunks [from, to) as of the cut; they stop being protected. */
  async read(from: number, to: number): Promise<Buffer> {
    const data = await this.readImage(from, to);
    for (let c = from; c < to; c++) {
      const copy = this.copies.get(c);
      if (copy !== undefined) {
        const at = (c - from) * CHUNK_BYTES;
        copy.copy(data, at, 0, Math.min(copy.length, data.length - at));
        this.copies.delete(c);
      }
    }
    this.consume(from, to);
    return data;
  }

  /** The cut is done with the view: nothing is protected any more. */
  release(): void {
    this.released = true;
    this.copies.clear();
  }
}
