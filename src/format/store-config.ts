import { LifeboatError } from '../core/errors.js';
import type { KdfParams } from './crypto.js';

/**
 * The `config` object: plain JSON, readable before unlocking, authenticated by
 * `mac` (HMAC-SHA256 under a key derived from the master key) once unlocked.
 */
export interface StoreConfig {
  readonly format: 'lifeboat-store';
  readonly version: 1;
  readonly storeId: string;
  readonly chunkSizeBytes: number;
  readonly chunkIdAlgorithm: number;
  readonly cipher: number;
  readonly codec: number;
  readonly createdAt: string;
  readonly mac: string;
}

export const STORE_FORMAT_VERSION = 1;
export const MIN_CHUNK_BYTES = 4096;
export const MAX_CHUNK_BYTES = 4 * 2 ** 20;

/** The bytes the config MAC covers: every field but `mac`, in a fixed order. */
export function configMacInput(c: Omit<StoreConfig, 'mac'>): string {
  return JSON.stringify([c.format, c.version, c.storeId, c.chunkSizeBytes, c.chunkIdAlgorithm, c.cipher, c.codec, c.createdAt]);
}

export function parseStoreConfig(buf: Buffer): StoreConfig {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(buf.toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new LifeboatError('CORRUPT_OBJECT', 'store config is not JSON', { cause: err, details: { object: 'config' } });
  }
  if (o === null || typeof o !== 'object' || o.format !== 'lifeboat-store') {
    throw new LifeboatError('CORRUPT_OBJECT', 'store config is not a Lifeboat store config', { details: { object: 'config' } });
  }
  if (!Number.isInteger(o.version) || (o.version as number) < 1) {
    throw new LifeboatError('CORRUPT_OBJECT', 'store config has no valid format version', { details: { object: 'config' } });
  }
  if ((o.version as number) > STORE_FORMAT_VERSION) {
    throw new LifeboatError('STORE_UNSUPPORTED_VERSION', `store format version ${String(o.version)} is newer than this program reads (${STORE_FORMAT_VERSION})`);
  }
  const size = o.chunkSizeBytes;
  if (
    typeof size !== 'number' ||
    size < MIN_CHUNK_BYTES ||
    size > MAX_CHUNK_BYTES ||
    (size & (size - 1)) !== 0 ||
    typeof o.storeId !== 'string' ||
    !/^[0-9a-f]{32}$/.test(o.storeId) ||
    typeof o.mac !== 'string'
  ) {
    throw new LifeboatError('CORRUPT_OBJECT', 'store config has invalid fields', { details: { object: 'config' } });
  }
  return o as unknown as StoreConfig;
}

/** A key slot: the master key wrapped under a key derived from one secret. */
export interface KeySlot {
  readonly version: 1;
  /** The store the slot belongs to: checked against the config before any key is tried. */
  readonly storeId: string;
  readonly slotId: string;
  readonly kind: 'passphrase' | 'recovery';
  readonly createdAt: string;
  readonly kdf: KdfParams;
  /** base64 of the sealed 64-byte master key material. */
  readonly wrappedKey: string;
  /** hex BLAKE3 of the slot's other fields: tells damage apart from a wrong secret. */
  readonly checksum: string;
}

export function slotChecksumInput(s: Omit<KeySlot, 'checksum'>): string {
  return JSON.stringify([s.version, s.storeId, s.slotId, s.kind, s.createdAt, s.kdf, s.wrappedKey]);
}
