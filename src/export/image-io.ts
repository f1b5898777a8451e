import type { FileHandle } from 'node:fs/promises';
import type { BlockSource } from '../core/block-source.js';
import { LifeboatError, isLifeboatError } from '../core/errors.js';

/**
 * Byte plumbing shared by the image writers: positional writes that never stop
 * short, bounded-size copies from a BlockSource, and progress reporting.
 */

/** Largest buffer any writer holds at once: reads and zero-fills go in pieces of this size. */
export const COPY_CHUNK_BYTES = 4 * 1024 * 1024;

/** Called with the guest bytes dealt with so far and the guest size; never decreases. */
export type ProgressFn = (doneBytes: number, totalBytes: number) => void;

/** Reports guest-offset progress monotonically; swallows no errors the callback throws. */
export class Progress {
  private done = 0;

  constructor(
    private readonly totalBytes: number,
    private readonly onProgress: ProgressFn | undefined,
  ) {}

  /** Records that every guest byte below `guestOffset` has been written or skipped. */
  advanceTo(guestOffset: number): void {
    const next = Math.min(guestOffset, this.totalBytes);
    if (next <= this.done) return;
    this.done = next;
    this.onProgress?.(this.done, this.totalBytes);
  }

  finish(): void {
    if (this.done < this.totalBytes) this.advanceTo(this.totalBytes);
    else if (this.totalBytes === 0) this.onProgress?.(0, 0);
  }
}

/** Writes all of `data` at `position`, looping over short writes. Errors become TARGET_UNWRITABLE. */
export async function writeAt(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < data.length) {
    let n: number;
    try {
      ({ bytesWritten: n } = await handle.write(data, written, data.length - written, position + written));
    } catch (err) {
      throw targetError(err, position + written);
    }
    if (n <= 0) throw new LifeboatError('TARGET_UNWRITABLE', 'the target accepted no bytes (device full?)', { details: { position } });
    written += n;
  }
}

/**
 * Copies source bytes [guestOffset, guestOffset+length) to the target at
 * `hostOffset`, in pieces of at most COPY_CHUNK_BYTES, advancing `progress` by
 * guest offset after each piece.
 */
export async function copyRange(
  source: BlockSource,
  handle: FileHandle,
  guestOffset: number,
  length: number,
  hostOffset: number,
  progress: Progress,
): Promise<void> {
  for (let done = 0; done < length; ) {
    const n = Math.min(COPY_CHUNK_BYTES, length - done);
    const data = await source.read(guestOffset + done, n);
    if (data.length !== n) {
      throw new LifeboatError('SOURCE_UNREADABLE', 'short read from the block source', {
        details: { offset: guestOffset + done, wanted: n, got: data.length },
      });
    }
    await writeAt(handle, data, hostOffset + done);
    done += n;
    progress.advanceTo(guestOffset + done);
  }
}

let zeroChunk: Buffer | undefined;

/** Writes `length` explicit zero bytes at `hostOffset` (for targets that cannot have holes). */
export async function writeZeros(
  handle: FileHandle,
  hostOffset: number,
  length: number,
  onPiece?: (written: number) => void,
): Promise<void> {
  zeroChunk ??= Buffer.alloc(COPY_CHUNK_BYTES);
  for (let done = 0; done < length; ) {
    const n = Math.min(zeroChunk.length, length - done);
    await writeAt(handle, zeroChunk.subarray(0, n), hostOffset + done);
    done += n;
    onPiece?.(done);
  }
}

/** Extends or cuts a regular file to `sizeBytes`; the extension is a hole. */
export async function truncateTo(handle: FileHandle, sizeBytes: number): Promise<void> {
  try {
    await handle.truncate(sizeBytes);
  } catch (err) {
    throw targetError(err, sizeBytes);
  }
}

function targetError(err: unknown, position: number): LifeboatError {
  if (isLifeboatError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new LifeboatError('TARGET_UNWRITABLE', `writing the image failed: ${message}`, { cause: err, details: { position } });
}
