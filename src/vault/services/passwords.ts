import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { LifeboatError } from '../../core/errors.js';

/**
 * Users' passwords for the portal's sign-in (docs/api.md, "Sign-in and sessions").
 * Stored as self-describing text `scrypt$N$r$p$SALT$HASH` (salt 16 random bytes, hash 32
 * bytes, both base64url), so the cost can be raised later without losing old hashes.
 * A password or a hash is never logged, returned or audited.
 */

export interface PasswordCost {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** 2^15 × 8 × 1: about 32 MiB and a few tens of milliseconds per hash. Tests lower N. */
export const DEFAULT_PASSWORD_COST: PasswordCost = { N: 2 ** 15, r: 8, p: 1 };

export const PASSWORD_MIN_CHARS = 12;
export const PASSWORD_MAX_CHARS = 256;

const SALT_BYTES = 16;
const HASH_BYTES = 32;
const FORMAT = /^scrypt\$(\d{1,8})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9_-]{16,64})\$([A-Za-z0-9_-]{16,128})$/;

function derive(password: string, salt: Buffer, keylen: number, cost: PasswordCost): Promise<Buffer> {
  const options: ScryptOptions = { N: cost.N, r: cost.r, p: cost.p, maxmem: 256 * cost.N * cost.r * cost.p };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashPassword(password: string, cost: PasswordCost = DEFAULT_PASSWORD_COST): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, HASH_BYTES, cost);
  return `scrypt$${cost.N}$${cost.r}$${cost.p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** Whether `password` is the one `stored` was made from, compared in constant time. INTERNAL for a stored text that is not a hash of ours. */
export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  const m = FORMAT.exec(stored);
  if (!m) throw new LifeboatError('INTERNAL', 'a stored password hash is not in the scrypt$N$r$p$salt$hash form');
  const cost = { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
  const expected = Buffer.from(m[5] as string, 'base64url');
  const actual = await derive(password, Buffer.from(m[4] as string, 'base64url'), expected.length, cost);
  return timingSafeEqual(actual, expected);
}

/** VALIDATION naming `field` when the password's length is outside 12..256 characters (the schemas say so too). */
export function checkPasswordLength(password: string, field: string): void {
  const chars = [...password].length;
  if (chars >= PASSWORD_MIN_CHARS && chars <= PASSWORD_MAX_CHARS) return;
  throw new LifeboatError('VALIDATION', `a password has ${PASSWORD_MIN_CHARS} to ${PASSWORD_MAX_CHARS} characters`, {
    details: { errors: [{ field, message: `must have ${PASSWORD_MIN_CHARS} to ${PASSWORD_MAX_CHARS} characters` }] },
  });
}

export interface AttemptLimits {
  /** Failures of one name that are allowed within the window; the next attempt is refused. Default 5. */
  readonly maxFailures: number;
  /** Default 15 minutes. */
  readonly windowMs: number;
}

const DEFAULT_LIMITS: AttemptLimits = { maxFailures: 5, windowMs: 15 * 60_000 };
/** Names remembered at most; beyond, the oldest are forgotten (a flood of made-up names cannot grow memory without bound). */
const MAX_NAMES = 10_000;

/**
 * Failed sign-ins per user name, in memory (a restart forgets them). After
 * `maxFailures` failures within `windowMs`, attempts for that name are refused with
 * TOO_MANY_ATTEMPTS (naming when to retry) until the oldest of them leaves the window;
 * refused attempts do not count. A successful sign-in forgets the name's failures.
 */
export class SignInAttempts {
  private readonly failures = new Map<string, number[]>();
  private readonly limits: AttemptLimits;

  constructor(
    private readonly now: () => Date,
    limits: Partial<AttemptLimits> = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Throws TOO_MANY_ATTEMPTS while `name` is locked out. */
  check(name: string): void {
    const recent = this.recent(name);
    if (recent.length < this.limits.maxFailures) return;
    const retryAt = new Date((recent[0] as number) + this.limits.windowMs);
    const retryAfterSeconds = Math.max(1, Math.ceil((retryAt.getTime() - this.now().getTime()) / 1000));
    throw new LifeboatError(
      'TOO_MANY_ATTEMPTS',
      `too many failed sign-ins for ${name}: ${recent.length} in ${this.limits.windowMs / 60_000} minutes; retry after ${retryAt.toISOString()}`,
      { details: { name, retryAt: retryAt.toISOString(), retryAfterSeconds } },
    );
  }

  failed(name: string): void {
    const recent = this.recent(name);
    recent.push(this.now().getTime());
    this.failures.delete(name);
    this.failures.set(name, recent);
    if (this.failures.size > MAX_NAMES) {
      const oldest = this.failures.keys().next();
      if (!oldest.done) this.failures.delete(oldest.value);
    }
  }

  succeeded(name: string): void {
    this.failures.delete(name);
  }

  private recent(name: string): number[] {
    const since = this.now().getTime() - this.limits.windowMs;
    const recent = (this.failures.get(name) ?? []).filter((t) => t > since);
    if (recent.length === 0) this.failures.delete(name);
    return recent;
  }
}
