import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { LifeboatError } from '../../core/errors.js';

/** One entry of the agent bundle, with a path relative to the bundle's root (`/` separated). */
export type BundleEntry =
  | { readonly kind: 'dir'; readonly path: string; readonly mode: number }
  | { readonly kind: 'file'; readonly path: string; readonly mode: number; readonly size: number; readonly sha256: string }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string };

export interface Bundle {
  readonly root: string;
  /** Parents before children, in a stable order. */
  readonly entries: readonly BundleEntry[];
  readonly totalBytes: number;
}

/** Names that sha256sum's manifest and a remote shell can carry without escaping. */
const SAFE_NAME = /^[A-Za-z0-9._+@=,:~-]+$/;

/**
 * Walks `root` and hashes every file. Modes keep the permission bits only
 * (setuid, setgid and sticky bits are dropped: push install runs as root).
 */
export async function readBundle(root: string): Promise<Bundle> {
  const entries: BundleEntry[] = [];
  let totalBytes = 0;
  const rootInfo = await lstat(root).catch((err: unknown) => {
    throw new LifeboatError('CONFIG_INVALID', `the agent bundle ${root} cannot be read`, { cause: err });
  });
  if (!rootInfo.isDirectory()) throw new LifeboatError('CONFIG_INVALID', `the agent bundle ${root} is not a directory`);
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const path = rel === '' ? name : `${rel}/${name}`;
      if (!SAFE_NAME.test(name)) {
        throw new LifeboatError('CONFIG_INVALID', `the agent bundle has a file name push install does not carry: ${JSON.stringify(path)}`);
      }
      const full = join(root, path);
      const info = await lstat(full);
      if (info.isDirectory()) {
        entries.push({ kind: 'dir', path, mode: info.mode & 0o777 });
        await visit(path);
      } else if (info.isFile()) {
        entries.push({ kind: 'file', path, mode: info.mode & 0o777, size: info.size, sha256: await sha256File(full) });
        totalBytes += info.size;
      } else if (info.isSymbolicLink()) {
        entries.push({ kind: 'symlink', path, target: await readlink(full) });
      } else {
        throw new LifeboatError('CONFIG_INVALID', `the agent bundle has ${path}, which is neither a file, a directory nor a symlink`);
      }
    }
  };
  await visit('');
  return { root, entries, totalBytes };
}

/** The bundle's files in `sha256sum -c` format, paths relative to the install directory. */
export function manifest(bundle: Bundle): string {
  return bundle.entries.map((e) => (e.kind === 'file' ? `${e.sha256}  ./${e.path}\n` : '')).join('');
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')));
  });
}
