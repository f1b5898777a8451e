import { createHash } from 'node:crypto';
import { lstat, mkdir, readlink, symlink, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { LifeboatError } from '../../core/errors.js';

/**
 * A Unix socket's path is limited to 107 bytes, and a machine's sockets live in its
 * state directory (`<stateDir>/<id>/qmp-changes-1.sock`). A state directory longer
 * than LONGEST is reached through a short symlink, `<tmp>/lifeboat-<uid>/<hash>`, in
 * a directory that only this user owns and may write (checked, never trusted), named
 * after the directory it points to so every start of the vault finds the same one.
 */
const LONGEST = 40;

export async function shortStateDir(stateDir: string): Promise<string> {
  const target = resolve(stateDir);
  if (target.length <= LONGEST) return target;
  await mkdir(target, { recursive: true, mode: 0o700 });
  const uid = process.getuid?.() ?? 0;
  const base = join(tmpdir(), `lifeboat-${uid}`);
  await mkdir(base, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const st = await lstat(base);
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) {
    throw new LifeboatError('COMPUTE_UNAVAILABLE', `${base} is not a directory only this user may write; remove it so the qemu driver can make its socket paths short`, {
      details: { path: base },
    });
  }
  const link = join(base, createHash('sha256').update(target).digest('hex').slice(0, 16));
  const current = await readlink(link).catch(() => undefined);
  if (current === target) return link;
  if (current !== undefined) await unlink(link);
  await symlink(target, link);
  return link;
}
