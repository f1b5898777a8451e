import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { link, mkdir, open, readdir, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { LifeboatError } from '../../core/errors.js';
import { checkSize, checkRange } from '../range.js';
import {
  checkKey,
  type ByteRange,
  type ObjectInfo,
  type PutOptions,
  type Storage,
  type StorageCapabilities,
} from '../storage.js';
import { errnoCode, mapFsError } from './fs-errors.js';

/**
 * Temp files carry '~', which no key segment may contain, so list() never shows
 * them and no key can ever name one. A crash can leave them behind; they are
 * garbage, never data.
 */
const TEMP_PREFIX = '.tmp~';
const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;
/** Attempts of put() against a concurrent delete() pruning the folder it just made. */
const PUT_FOLDER_RACES = 5;

function isKeySegment(name: string): boolean {
  return KEY_SEGMENT.test(name) && name !== '.' && name !== '..';
}

/**
 * A store in a local folder, opened from `file:///abs/path`. Key segments map to
 * nested folders. put() writes a temp file in the target folder, fsyncs it and
 * renames it over the key (create-only puts link() it instead, which fails when
 * the name exists, so conditional create is atomic), then fsyncs the folder.
 *
 * Limitation of file systems: a key cannot also be a folder of other keys ("a"
 * and "a/b" cannot both exist); such a put throws USAGE.
 */
export class FsStorage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities = { conditionalCreate: true, maxObjectSizeBytes: 2 ** 40 };
  private readonly root: string;

  private constructor(root: string) {
    this.root = root;
    this.url = pathToFileURL(root).href;
  }

  /** Opens the folder named by a `file:` URL; it is created on the first put. */
  static async open(url: string | URL): Promise<FsStorage> {
    const parsed = typeof url === 'string' ? new URL(url) : url;
    if (parsed.protocol !== 'file:' || (parsed.host !== '' && parsed.host !== 'localhost')) {
      throw new LifeboatError('CONFIG_INVALID', 'file storage URL must be file:///absolute/path', { details: { url: parsed.href } });
    }
    const path = fileURLToPath(parsed);
    if (!isAbsolute(path)) throw new LifeboatError('CONFIG_INVALID', 'file storage path must be absolute', { details: { path } });
    const root = resolve(path);
    try {
      const info = await stat(root);
      if (!info.isDirectory()) throw new LifeboatError('CONFIG_INVALID', 'file storage path is not a folder', { details: { path: root } });
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw mapFsError(err, 'open', '');
    }
    return new FsStorage(root);
  }

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    checkKey(key);
    checkSize(key, data.length, this.capabilities.maxObjectSizeBytes);
    const path = this.pathOf(key);
    const folder = dirname(path);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.makeFolder(folder);
        await this.writeAtomically(folder, path, data, options.ifNoneMatch === true, key);
        return;
      } catch (err) {
        // ENOENT here means a concurrent delete() pruned the folder we just made.
        if (errnoCode(err) === 'ENOENT' && attempt < PUT_FOLDER_RACES) continue;
        throw mapFsError(err, 'put', key);
      }
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    checkKey(key);
    if (range) checkRange(range);
    let handle;
    try {
      handle = await open(this.pathOf(key), 'r');
    } catch (err) {
      throw this.readError(err, key);
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new LifeboatError('NOT_FOUND', `object ${key} not found`, { details: { key } });
      const start = range?.offset ?? 0;
      const want = range ? Math.min(range.length, Math.max(0, info.size - start)) : info.size;
      const out = Buffer.allocUnsafe(want); // every byte is read below, or the read fails
      let filled = 0;
      while (filled < want) {
        const { bytesRead } = await handle.read(out, filled, want - filled, start + filled);
        // The handle pins the inode, which is never modified in place: a short file is damage.
        if (bytesRead === 0) throw new LifeboatError('STORAGE_UNAVAILABLE', 'object shrank while being read', { details: { key } });
        filled += bytesRead;
      }
      return out;
    } catch (err) {
      throw this.readError(err, key);
    } finally {
      await handle.close();
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    try {
      const info = await stat(this.pathOf(key));
      return info.isFile() ? { key, sizeBytes: info.size, modifiedAt: info.mtime } : undefined;
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw mapFsError(err, 'stat', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const folderKey = prefix.slice(0, prefix.lastIndexOf('/') + 1);
    // A prefix whose folder part is no valid key path cannot match any key.
    if (folderKey !== '' && !folderKey.slice(0, -1).split('/').every(isKeySegment)) return;
    yield* this.walk(folderKey, prefix);
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    const path = this.pathOf(key);
    try {
      await unlink(path);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return;
      throw mapFsError(err, 'delete', key);
    }
    await this.pruneFolders(dirname(path));
  }

  async close(): Promise<void> {}

  private pathOf(key: string): string {
    return join(this.root, ...key.split('/'));
  }

  /** Creates `folder` and fsyncs the parents of every folder it had to create. */
  private async makeFolder(folder: string): Promise<void> {
    const first = await mkdir(folder, { recursive: true });
    if (first === undefined) return;
    for (let dir = folder; ; dir = dirname(dir)) {
      await syncFolder(dirname(dir));
      if (dir === first || dir === dirname(dir)) return;
    }
  }

  private async writeAtomically(folder: string, path: string, data: Uint8Array, createOnly: boolean, key: string): Promise<void> {
    const temp = join(folder, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const handle = await open(temp, 'wx', 0o644);
    let placed = false;
    try {
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (createOnly) {
        try {
          await link(temp, path);
        } catch (err) {
          if (errnoCode(err) === 'EEXIST') {
            throw new LifeboatError('STORAGE_PRECONDITION', `object ${key} already exists`, { details: { key } });
          }
          throw err;
        }
      } else {
        await rename(temp, path);
        placed = true;
      }
    } finally {
      if (!placed) await unlink(temp).catch(() => undefined);
    }
    await syncFolder(folder);
  }

  /** Removes empty folders from `folder` up to, never including, the root. */
  private async pruneFolders(folder: string): Promise<void> {
    await syncFolder(folder).catch(() => undefined);
    const inside = this.root.endsWith(sep) ? this.root : this.root + sep;
    for (let dir = folder; dir.startsWith(inside) && dir.length > inside.length; dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty (or gone): an ordinary outcome of pruning, not an error
      }
    }
  }

  private async *walk(folderKey: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries: Dirent[];
    try {
      entries = await readdir(join(this.root, ...folderKey.split('/')), { withFileTypes: true });
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw mapFsError(err, 'list', prefix);
    }
    // Sorting folders as "name/" puts them exactly where their keys sort among siblings.
    const items = entries
      .filter((e) => isKeySegment(e.name) && (e.isFile() || e.isDirectory()))
      .map((e) => ({ folder: e.isDirectory(), sortKey: folderKey + e.name + (e.isDirectory() ? '/' : '') }))
      .filter((i) => i.sortKey.startsWith(prefix) || (i.folder && prefix.startsWith(i.sortKey)))
      .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const item of items) {
      if (item.folder) {
        yield* this.walk(item.sortKey, prefix);
        continue;
      }
      const info = await this.stat(item.sortKey);
      if (info) yield info; // deleted since readdir: the contract lets it be absent
    }
  }

  private readError(err: unknown, key: string): LifeboatError {
    const code = errnoCode(err);
    if (code === 'ENOTDIR' || code === 'EISDIR') return new LifeboatError('NOT_FOUND', `object ${key} not found`, { cause: err, details: { key } });
    return mapFsError(err, 'get', key);
  }
}

/** Makes a folder's entries (a rename, a new file) durable. */
async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
