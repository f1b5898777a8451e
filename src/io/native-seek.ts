import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The lseek addon (native/seek.c), shared by backups (src/store) and change tracking. */
export interface NativeSeek {
  /** The next data offset at or after `offset`, or -1 past the last data (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** The next hole offset at or after `offset` (the file's end counts as a hole), or -1. */
  seekHole(fd: number, offset: number): number;
  seekEnd(fd: number, offset: number): number;
}

let loaded: NativeSeek | null | undefined;

/**
 * The lseek addon built from native/seek.c at install time. Returns null when it
 * was not built; callers then read every byte (holes read as zeros and are still
 * recorded as zero chunks, so only speed suffers, never correctness).
 */
export function nativeSeek(): NativeSeek | null {
  if (loaded !== undefined) return loaded;
  const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
  try {
    loaded = createRequire(import.meta.url)(join(root, 'build', 'Release', 'lifeboat_native.node')) as NativeSeek;
  } catch {
    loaded = null;
  }
  return loaded;
}
