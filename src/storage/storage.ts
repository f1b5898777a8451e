import { LifeboatError } from '../core/errors.js';

/**
 * The storage contract every driver (fs, azure-blob, s3, memory) implements.
 *
 * Keys are relative, '/'-separated, made of [A-Za-z0-9._-] segments; no leading
 * slash, no empty segment, no '.' or '..' segment. Drivers map them onto their own
 * namespace under the store URL's path.
 *
 * Contract (checked by test/storage/contract.ts against every driver):
 * - put() is atomic: a reader sees either the whole new object or none of it, never
 *   a prefix. Without `ifNoneMatch` it replaces any existing object and is
 *   idempotent, so it is safe to retry. With `ifNoneMatch: true` it creates only:
 *   when the key exists it throws LifeboatError STORAGE_PRECONDITION and changes
 *   nothing; drivers whose service cannot enforce that say so in `capabilities`.
 * - get() of an absent key throws LifeboatError NOT_FOUND. A range read returns the
 *   bytes of [offset, offset+length) that exist: fewer when the object is shorter,
 *   an empty buffer when offset is at or past the end.
 * - stat() returns undefined for an absent key.
 * - list(prefix) yields every object whose key starts with `prefix`, in ascending
 *   key order, each once. Objects put or deleted during a listing may or may not
 *   appear.
 * - delete() of an absent key succeeds (idempotent).
 * - Transient failures throw STORAGE_UNAVAILABLE (retryable); refused credentials
 *   throw STORAGE_AUTH. Retry, concurrency limits and metrics are not the driver's
 *   job: they are wrappers applied in src/storage/registry.ts.
 */
export interface ObjectInfo {
  readonly key: string;
  readonly sizeBytes: number;
  readonly modifiedAt: Date;
}

export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

export interface PutOptions {
  /** Create only: fail with STORAGE_PRECONDITION if the key exists. */
  readonly ifNoneMatch?: boolean;
}

export interface StorageCapabilities {
  /** put({ifNoneMatch:true}) is enforced by the service itself. */
  readonly conditionalCreate: boolean;
  /** Largest object put() accepts in one call. */
  readonly maxObjectSizeBytes: number;
}

export interface Storage {
  /** The URL the store was opened with, credentials removed. */
  readonly url: string;
  readonly capabilities: StorageCapabilities;
  put(key: string, data: Uint8Array, options?: PutOptions): Promise<void>;
  get(key: string, range?: ByteRange): Promise<Buffer>;
  stat(key: string): Promise<ObjectInfo | undefined>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  delete(key: string): Promise<void>;
  /** Releases sockets and handles; the instance is unusable afterwards. */
  close(): Promise<void>;
}

const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Throws USAGE for a key that breaks the contract's key rules. */
export function checkKey(key: string): void {
  const segments = key.split('/');
  for (const segment of segments) {
    if (!KEY_SEGMENT.test(segment) || segment === '.' || segment === '..') {
      throw new LifeboatError('USAGE', `invalid storage key ${JSON.stringify(key)}`, { details: { key } });
    }
  }
}

/** Reads a whole listing into an array (for small prefixes only). */
export async function listAll(storage: Storage, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of storage.list(prefix)) out.push(info);
  return out;
}
