import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, scrypt as scryptCb, createHmac, timingSafeEqual } from 'node:crypto';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { LifeboatError } from '../core/errors.js';
import { decode, encode, CODEC_NONE } from './codec.js';

/** Permanent cipher ids (docs/format/store.md). */
export const CIPHER_AES_256_GCM = 1;

/** Permanent chunk-id algorithm ids. */
export const CHUNK_ID_BLAKE3_KEYED_128 = 1;

export const CHUNK_ID_BYTES = 16;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** cipher id + nonce + tag: what sealing adds to a plaintext. */
export const ENVELOPE_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES;

/**
 * The store's secret: 64 random bytes made at `store init`, never stored in
 * clear. The first half encrypts, the second half keys the chunk-id hash.
 */
export class MasterKey {
  readonly encKey: Buffer;
  readonly idKey: Buffer;
  readonly macKey: Buffer;
  readonly material: Buffer;

  constructor(material: Buffer) {
    if (material.length !== 64) throw new LifeboatError('INTERNAL', 'master key material must be 64 bytes');
    this.material = material;
    this.encKey = material.subarray(0, 32);
    this.idKey = material.subarray(32, 64);
    this.macKey = Buffer.from(hkdfSync('sha256', this.encKey, Buffer.alloc(0), 'lifeboat config mac v1', 32));
  }

  static generate(): MasterKey {
    return new MasterKey(randomBytes(64));
  }

  /** Key for the frames of one pack: a fresh key per pack keeps random nonces far from their bound. */
  packKey(packId: Buffer): Buffer {
    return Buffer.from(hkdfSync('sha256', this.encKey, packId, 'lifeboat pack key v1', 32));
  }

  mac(data: string | Buffer): string {
    return createHmac('sha256', this.macKey).update(data).digest('hex');
  }
}

/** Keyed BLAKE3 of chunk plaintext, truncated to 128 bits. One instance per thread. */
export class ChunkHasher {
  private readonly hasher: Blake3Hasher;

  constructor(idKey: Buffer) {
    this.hasher = Blake3Hasher.newKeyed(idKey);
  }

  id(data: Uint8Array): Buffer {
    this.hasher.reset();
    this.hasher.update(data);
    return this.hasher.digestBuffer().subarray(0, CHUNK_ID_BYTES);
  }
}

/**
 * Envelope: u8 cipher id | 12-byte nonce | ciphertext | 16-byte GCM tag.
 * The plaintext is u8 codec id | payload. `aad` binds the envelope to its place
 * (object key, pack id), so an object copied elsewhere fails to open.
 */
export function seal(key: Buffer, data: Buffer, aad: Buffer, compress = true): Buffer {
  const { codec, payload } = compress ? encode(data) : { codec: CODEC_NONE, payload: data };
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  const head = cipher.update(Buffer.of(codec));
  const body = cipher.update(payload);
  const fin = cipher.final();
  return Buffer.concat([Buffer.of(CIPHER_AES_256_GCM), nonce, head, body, fin, cipher.getAuthTag()]);
}

export function open(key: Buffer, envelope: Buffer, aad: Buffer, what: string, expectedLength?: number): Buffer {
  if (envelope.length < ENVELOPE_OVERHEAD + 1) {
    throw new LifeboatError('CORRUPT_OBJECT', `${what} is truncated (${envelope.length} bytes)`, { details: { object: what } });
  }
  if (envelope[0] !== CIPHER_AES_256_GCM) {
    throw new LifeboatError('CORRUPT_OBJECT', `${what} has unknown cipher id ${envelope[0]}`, { details: { object: what } });
  }
  const nonce = envelope.subarray(1, 1 + NONCE_BYTES);
  const tag = envelope.subarray(envelope.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  let plain: Buffer;
  try {
    plain = Buffer.concat([decipher.update(envelope.subarray(1 + NONCE_BYTES, envelope.length - TAG_BYTES)), decipher.final()]);
  } catch (err) {
    throw new LifeboatError('CORRUPT_OBJECT', `${what} failed authentication (damaged, truncated or moved)`, {
      cause: err,
      details: { object: what },
    });
  }
  return decode(plain[0] ?? -1, plain.subarray(1), expectedLength);
}

export function aad(...parts: string[]): Buffer {
  return Buffer.from(['lifeboat', 'v1', ...parts].join('/'), 'utf8');
}

// ---- key slots -------------------------------------------------------------

export interface ScryptParams {
  readonly algorithm: 'scrypt';
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly saltHex: string;
}

export interface HkdfParams {
  readonly algorithm: 'hkdf-sha256';
  readonly saltHex: string;
}

export type KdfParams = ScryptParams | HkdfParams;

/** Interactive-strength scrypt: 64 MiB of memory, about a quarter of a second here. */
export const DEFAULT_SCRYPT = { N: 2 ** 16, r: 8, p: 1 } as const;

export function deriveSlotKey(secret: Buffer, kdf: KdfParams): Promise<Buffer> {
  const salt = Buffer.from(kdf.saltHex, 'hex');
  if (kdf.algorithm === 'hkdf-sha256') {
    return Promise.resolve(Buffer.from(hkdfSync('sha256', secret, salt, 'lifeboat recovery key v1', 32)));
  }
  return new Promise((resolve, reject) => {
    scryptCb(secret, salt, 32, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 256 * kdf.N * kdf.r + 2 ** 20 }, (err, key) =>
      err ? reject(new LifeboatError('CONFIG_INVALID', 'key derivation failed', { cause: err })) : resolve(key),
    );
  });
}

// ---- recovery keys ---------------------------------------------------------

const RECOVERY_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';

/** A recovery key: 30 random bytes as 48 characters in groups of six, plus a check group. */
export function newRecoveryKey(): string {
  return formatRecoveryKey(randomBytes(30));
}

function formatRecoveryKey(bytes: Buffer): string {
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let text = '';
  for (let i = 0; i < 48; i++) {
    text = RECOVERY_ALPHABET.charAt(Number(bits & 31n)) + text;
    bits >>= 5n;
  }
  const check = createHmac('sha256', 'lifeboat recovery key check').update(bytes).digest();
  let checkText = '';
  for (let i = 0; i < 4; i++) checkText += RECOVERY_ALPHABET.charAt((check[i] ?? 0) % 32);
  return [...(text.match(/.{6}/g) ?? []), checkText].join('-');
}

/** Parses a recovery key typed by a person; undefined if the text is not one. */
export function parseRecoveryKey(text: string): Buffer | undefined {
  const clean = text.trim().toUpperCase().replace(/[\s-]/g, '');
  if (clean.length !== 52 || [...clean].some((c) => !RECOVERY_ALPHABET.includes(c))) return undefined;
  let bits = 0n;
  for (const ch of clean.slice(0, 48)) bits = (bits << 5n) | BigInt(RECOVERY_ALPHABET.indexOf(ch));
  const bytes = Buffer.alloc(30);
  for (let i = 29; i >= 0; i--) {
    bytes[i] = Number(bits & 255n);
    bits >>= 8n;
  }
  return formatRecoveryKey(bytes).replace(/-/g, '') === clean ? bytes : undefined;
}

export function constantTimeEqualHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
