import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LifeboatError } from '../core/errors.js';
import type { AzureBlobOptions } from './azure-blob/azure-blob-storage.js';
import { FsStorage } from './fs/fs-storage.js';
import { MemoryStorage } from './memory/memory-storage.js';
import type { S3Options } from './s3/s3-storage.js';
import type { Storage } from './storage.js';
import { LimitStorage } from './wrappers/limit.js';
import { MetricsStorage, type MetricsSnapshot } from './wrappers/metrics.js';
import { DEFAULT_RETRY, RetryStorage, type RetryOptions } from './wrappers/retry.js';

export interface OpenStorageOptions {
  /** Environment for credentials and endpoints; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Operations in flight at once (default 16). */
  readonly concurrency?: number;
  /** Retry policy; maxAttempts 1 disables retry. */
  readonly retry?: Partial<RetryOptions>;
  /** `memory:` URLs are for tests and refused unless this is true. */
  readonly allowMemory?: boolean;
  /** Driver options beyond the environment; their `env` defaults to the one above. */
  readonly azure?: AzureBlobOptions;
  readonly s3?: S3Options;
}

export const DEFAULT_CONCURRENCY = 16;

type DriverOpener = (url: URL, options: OpenStorageOptions) => Promise<Storage>;

/** The one list of storage drivers, keyed by URL scheme. */
const DRIVERS: Readonly<Record<string, DriverOpener>> = Object.freeze({
  'file:': (url) => FsStorage.open(url),
  // Cloud SDKs load only when their scheme is used: they cost a third of a second at start-up.
  'azblob:': async (url, o) => (await import('./azure-blob/azure-blob-storage.js')).AzureBlobStorage.open(url, { env: o.env, ...o.azure }),
  's3:': async (url, o) => (await import('./s3/s3-storage.js')).S3Storage.open(url, { env: o.env, ...o.s3 }),
  'memory:': async (url, o) => {
    if (!o.allowMemory) {
      throw new LifeboatError('UNSUPPORTED_SCHEME', 'memory storage is for tests only', { details: { scheme: 'memory:' } });
    }
    return new MemoryStorage({ url: url.href });
  },
});

export const STORAGE_SCHEMES: readonly string[] = Object.keys(DRIVERS);

const metricsOf = new WeakMap<Storage, MetricsStorage>();

/**
 * Opens the store at `url` with the driver its scheme names, wrapped once as
 * retry(limit(metrics(driver))): retry is outermost so backoff waits hold no
 * concurrency slot, and metrics sit at the driver so every attempt is counted.
 * A plain absolute path means a local folder. An unknown scheme throws
 * UNSUPPORTED_SCHEME; a driver that cannot start (bad credentials, missing bucket)
 * throws here rather than on first use.
 */
export async function openStorage(url: string, options: OpenStorageOptions = {}): Promise<Storage> {
  const parsed = parseStoreUrl(url);
  const open = Object.hasOwn(DRIVERS, parsed.protocol) ? DRIVERS[parsed.protocol] : undefined;
  if (!open) {
    throw new LifeboatError('UNSUPPORTED_SCHEME', 'no storage driver for the URL scheme', {
      details: { scheme: parsed.protocol, known: STORAGE_SCHEMES },
    });
  }
  const driver = await open(parsed, options);
  const metrics = new MetricsStorage(driver);
  const limited = new LimitStorage(metrics, options.concurrency ?? DEFAULT_CONCURRENCY);
  const storage = new RetryStorage(limited, { ...DEFAULT_RETRY, ...options.retry });
  metricsOf.set(storage, metrics);
  return storage;
}

/** The counters of a store opened by openStorage(); INTERNAL for any other object. */
export function storageMetrics(storage: Storage): MetricsSnapshot {
  const metrics = metricsOf.get(storage);
  if (!metrics) throw new LifeboatError('INTERNAL', 'storage was not opened by openStorage');
  return metrics.snapshot();
}

function parseStoreUrl(url: string): URL {
  if (isAbsolute(url)) return pathToFileURL(url);
  try {
    return new URL(url);
  } catch (err) {
    throw new LifeboatError('USAGE', 'store URL is neither a URL nor an absolute path', { cause: err, details: { url: redactPlain(url) } });
  }
}

/** Drops anything that looks like user:password@ from a string that is not a URL. */
function redactPlain(url: string): string {
  return url.replace(/\/\/[^/@]*@/, '//');
}
