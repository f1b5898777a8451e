/**
 * Registration keys (seed step 3): a configuration server registers with its
 * vault by presenting a key the operator downloaded. The key is valid 5 days,
 * has one purpose, and is a compact signed string the vault can check without a
 * database read:
 *
 *   lbrk1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "lbrk1." + payload part))>
 *
 * The vault still stores the key id (model RegistrationKey) so that a key can be
 * revoked; revocation is checked by the caller, not here. Registration also fails
 * when the server's clock differs from the vault's by more than 5 minutes.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { LifeboatError } from './errors.js';

export const REGISTRATION_KEY_PREFIX = 'lbrk1';
export const REGISTRATION_KEY_VALIDITY_MS = 5 * 24 * 3600 * 1000;
export const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;
export const REGISTRATION_PURPOSE = 'register-config-server';
const MIN_SECRET_BYTES = 32;
/** Longer strings are refused before any decoding work. */
const MAX_KEY_CHARS = 2048;

export interface RegistrationKeyPayload {
  readonly vaultId: string;
  readonly keyId: string;
  readonly purpose: typeof REGISTRATION_PURPOSE;
  readonly issuedAt: string;
  readonly expiresAt: string;
}

export interface IssuedRegistrationKey {
  readonly text: string;
  readonly payload: RegistrationKeyPayload;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

function sign(secret: Buffer, signed: string): Buffer {
  if (secret.length < MIN_SECRET_BYTES) throw new LifeboatError('INTERNAL', `the vault secret must be at least ${MIN_SECRET_BYTES} bytes`);
  return createHmac('sha256', secret).update(signed, 'utf8').digest();
}

export function issueRegistrationKey(secret: Buffer, ids: { vaultId: string; keyId: string }, now: Date): IssuedRegistrationKey {
  for (const [name, v] of Object.entries(ids)) {
    if (typeof v !== 'string' || v.length === 0 || v.length > 128) throw new LifeboatError('VALIDATION', `${name} must be a non-empty string`);
  }
  const payload: RegistrationKeyPayload = {
    vaultId: ids.vaultId,
    keyId: ids.keyId,
    purpose: REGISTRATION_PURPOSE,
    issuedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + REGISTRATION_KEY_VALIDITY_MS).toISOString(),
  };
  const body = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
  const signed = `${REGISTRATION_KEY_PREFIX}.${body}`;
  return { text: `${signed}.${sign(secret, signed).toString('base64url')}`, payload };
}

function invalid(reason: string): LifeboatError {
  return new LifeboatError('REGISTRATION_KEY_INVALID', `the registration key is not valid: ${reason}`, { details: { reason } });
}

/** Strict base64url: only the canonical encoding of some bytes is accepted. */
function decodeB64url(s: string): Buffer | undefined {
  if (!B64URL.test(s)) return undefined;
  const b = Buffer.from(s, 'base64url');
  return b.toString('base64url') === s ? b : undefined;
}

function isIsoTime(v: unknown): v is string {
  return typeof v === 'string' && !Number.isNaN(Date.parse(v)) && new Date(Date.parse(v)).toISOString() === v;
}

/**
 * Checks a key presented by a configuration server and returns its payload.
 * Order: shape and signature (REGISTRATION_KEY_INVALID, no detail of which part
 * is wrong beyond "malformed" or "signature"), purpose, expiry
 * (REGISTRATION_KEY_EXPIRED naming the expiry), then the caller's clock if given
 * (CLOCK_SKEW).
 */
export function verifyRegistrationKey(
  secret: Buffer,
  text: string,
  options: { now: Date; callerClock?: Date; maxSkewMs?: number },
): RegistrationKeyPayload {
  if (typeof text !== 'string' || text.length > MAX_KEY_CHARS) throw invalid('malformed');
  const parts = text.trim().split('.');
  if (parts.length !== 3 || parts[0] !== REGISTRATION_KEY_PREFIX) throw invalid('malformed');
  const [, body = '', mac = ''] = parts;
  const given = decodeB64url(mac);
  const raw = decodeB64url(body);
  if (given === undefined || raw === undefined) throw invalid('malformed');
  const expected = sign(secret, `${REGISTRATION_KEY_PREFIX}.${body}`);
  // Compare in constant time; a wrong length is refused before (it reveals nothing secret).
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid('signature does not match (forged or for another vault)');
  let p: unknown;
  try {
    p = JSON.parse(raw.toString('utf8'));
  } catch {
    throw invalid('malformed');
  }
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw invalid('malformed');
  const o = p as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  if (keys !== 'expiresAt,issuedAt,keyId,purpose,vaultId') throw invalid('malformed');
  if (typeof o['vaultId'] !== 'string' || typeof o['keyId'] !== 'string' || !isIsoTime(o['issuedAt']) || !isIsoTime(o['expiresAt'])) {
    throw invalid('malformed');
  }
  if (o['purpose'] !== REGISTRATION_PURPOSE) throw invalid(`wrong purpose '${String(o['purpose'])}'`);
  const payload = o as unknown as RegistrationKeyPayload;
  if (options.now.getTime() > Date.parse(payload.expiresAt)) {
    throw new LifeboatError('REGISTRATION_KEY_EXPIRED', `the registration key expired at ${payload.expiresAt} (it is valid 5 days)`, {
      details: { keyId: payload.keyId, expiresAt: payload.expiresAt, now: options.now.toISOString() },
    });
  }
  if (options.callerClock !== undefined) checkClockSkew(options.now, options.callerClock, options.maxSkewMs);
  return payload;
}

/** Refuses a caller whose clock is more than `maxSkewMs` from the server's, either way (exactly the limit is allowed). */
export function checkClockSkew(serverNow: Date, callerNow: Date, maxSkewMs = MAX_CLOCK_SKEW_MS): void {
  const diffMs = callerNow.getTime() - serverNow.getTime();
  if (!Number.isFinite(diffMs) || Math.abs(diffMs) > maxSkewMs) {
    const seconds = Math.round(Math.abs(diffMs) / 1000);
    throw new LifeboatError(
      'CLOCK_SKEW',
      `the caller's clock (${isoOr(callerNow)}) is ${seconds} s ${diffMs > 0 ? 'ahead of' : 'behind'} the vault's (${isoOr(serverNow)}); at most ${maxSkewMs / 1000} s is allowed`,
      { details: { serverTime: isoOr(serverNow), callerTime: isoOr(callerNow), differenceMs: diffMs, maxSkewMs } },
    );
  }
}

function isoOr(d: Date): string {
  return Number.isNaN(d.getTime()) ? 'invalid date' : d.toISOString();
}

/** For the "registration key about to expire" alert: true while the key is usable and expires within `withinMs`. */
export function keyExpiringSoon(key: { expiresAt: string; revoked?: boolean }, now: Date, withinMs: number): boolean {
  if (key.revoked) return false;
  const left = Date.parse(key.expiresAt) - now.getTime();
  return left >= 0 && left <= withinMs;
}
