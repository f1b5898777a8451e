import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** Makes a directory's entries (a rename, a new file) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Writes `dir/name` atomically and durably: a temp file beside it (mode 0600),
 * written and fsynced, renamed over the name, then the directory fsynced. A crash
 * leaves the old file or the new one, never a mix; the temp file is removed on failure.
 */
export async function writeFileDurable(dir: string, name: string, data: string | Buffer | readonly Buffer[]): Promise<void> {
  const tmp = join(dir, `${name}.tmp`);
  const h = await open(tmp, 'w', 0o600);
  try {
    if (Array.isArray(data)) await h.writev(data as Buffer[]);
    else await h.writeFile(data as string | Buffer);
    await h.sync();
  } catch (err) {
    await h.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await h.close();
  await rename(tmp, join(dir, name));
  await fsyncDir(dir);
}
