import { LifeboatError } from '../core/errors.js';
import type { ByteRange } from './storage.js';

/** Throws USAGE unless offset and length are non-negative safe integers. */
export function checkRange(range: ByteRange): void {
  const { offset, length } = range;
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new LifeboatError('USAGE', 'invalid byte range', { details: { offset, length } });
  }
}

/** Throws USAGE for a put larger than the driver's declared maximum. */
export function checkSize(key: string, sizeBytes: number, maxObjectSizeBytes: number): void {
  if (sizeBytes > maxObjectSizeBytes) {
    throw new LifeboatError('USAGE', 'object larger than the storage driver accepts', {
      details: { key, sizeBytes, maxObjectSizeBytes },
    });
  }
}

/** Strips userinfo, query and fragment so a URL can be shown and logged. */
export function redactUrl(url: URL): string {
  const copy = new URL(url.href);
  copy.username = '';
  copy.password = '';
  copy.search = '';
  copy.hash = '';
  return copy.href;
}
