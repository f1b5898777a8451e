import { LifeboatError } from '../../core/errors.js';

/** Errors the operating system reports for conditions that may clear by themselves. */
const TRANSIENT = new Set(['EIO', 'EAGAIN', 'EBUSY', 'ETIMEDOUT', 'EMFILE', 'ENFILE', 'ESTALE', 'EINTR', 'ECONNRESET']);
/** The folder is there but refuses us: treated like refused credentials. */
const REFUSED = new Set(['EACCES', 'EPERM', 'EROFS']);
/** Full disks do not clear within a retry budget; retrying only delays the report. */
const FULL = new Set(['ENOSPC', 'EDQUOT']);

export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** Maps a Node.js fs error to the storage contract's codes; `key` goes into details. */
export function mapFsError(err: unknown, op: string, key: string): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const code = errnoCode(err);
  const details = { op, key, errno: code };
  if (code === 'ENOENT') return new LifeboatError('NOT_FOUND', `object ${key} not found`, { cause: err, details });
  if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'EEXIST') {
    // A key cannot be both an object and a folder of other objects on a file system.
    return new LifeboatError('USAGE', 'storage key collides with a folder or file of another key', { cause: err, details });
  }
  if (code !== undefined && REFUSED.has(code)) {
    return new LifeboatError('STORAGE_AUTH', 'storage folder refused access', { cause: err, details });
  }
  if (code !== undefined && FULL.has(code)) {
    return new LifeboatError('STORAGE_UNAVAILABLE', 'storage folder is full', { cause: err, details, retryable: false });
  }
  const retryable = code !== undefined && TRANSIENT.has(code);
  return new LifeboatError('STORAGE_UNAVAILABLE', 'storage folder operation failed', { cause: err, details, retryable });
}
