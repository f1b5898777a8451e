import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The lseek addon (native/seek.c: SEEK_DATA, SEEK_HOLE, SEEK_END). The same
 * loader as src/store/native.ts, repeated here because change tracking may not
 * import the store (eslint.config.js layers); both load the one built addon.
 */
export interface NativeSeek {
  /** The next data offset at or after `offset`, or -1 past the last data (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** The next hole offset at or after `offset` (the file's end counts as a hole), or -1. */
  seekHole(fd: number, offset: number): number;
  seekEnd(fd: number, offset: number): number;
}

let loaded: NativeSeek | null | undefined;

/** Null when the addon was not built: every byte is then read (slower, never wrong). */
export function nativeSeek(): NativeSeek | null {
  if (loaded !== undefined) return loaded;
  const root = join(fileURLToPath(import.meta.url), '..', '..', '..', '..');
  try {
    loaded = createRequire(import.meta.url)(join(root, 'build', 'Release', 'lifeboat_native.node')) as NativeSeek;
  } catch {
    loaded = null;
  }
  return loaded;
}
