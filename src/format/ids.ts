import { randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * A 26-character, time-ordered identifier (ULID layout: 48-bit milliseconds then
 * 80 random bits, Crockford base32). Sorting ids as strings sorts them by time.
 */
export function newTimeId(now: Date, random: (n: number) => Buffer = randomBytes): string {
  const ms = now.getTime();
  checkMs(ms);
  return encodeTimeId(ms, bitsOf(random(10)));
}

/**
 * Ids that strictly increase within one process: an id made in the same
 * millisecond as the previous one (or with a clock that stepped back) continues
 * from it, so "newest" is never decided by chance. Used for recovery points.
 */
export class TimeIdSequence {
  private last: { ms: number; bits: bigint } | undefined;

  /** The next id; when `after` is given (another process's newest id), the result also sorts after it. */
  next(now: Date, random: (n: number) => Buffer = randomBytes, after?: string): string {
    let ms = now.getTime();
    checkMs(ms);
    const prior = after === undefined ? undefined : decodeTimeId(after);
    if (prior && (!this.last || prior.ms > this.last.ms || (prior.ms === this.last.ms && prior.bits > this.last.bits))) this.last = prior;
    let bits: bigint;
    if (this.last && ms <= this.last.ms && this.last.bits < 2n ** 80n - 1n) {
      ms = this.last.ms;
      bits = this.last.bits + 1n;
    } else bits = bitsOf(random(10));
    this.last = { ms, bits };
    return encodeTimeId(ms, bits);
  }
}

function checkMs(ms: number): void {
  if (!Number.isSafeInteger(ms) || ms < 0 || ms >= 2 ** 48) throw new RangeError('time outside 1970..10889 cannot be encoded');
}

function decodeTimeId(id: string): { ms: number; bits: bigint } | undefined {
  if (!TIME_ID_PATTERN.test(id)) return undefined;
  let ms = 0;
  for (const ch of id.slice(0, 10)) ms = ms * 32 + CROCKFORD.indexOf(ch);
  let bits = 0n;
  for (const ch of id.slice(10)) bits = (bits << 5n) | BigInt(CROCKFORD.indexOf(ch));
  return { ms, bits };
}

function bitsOf(bytes: Buffer): bigint {
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  return bits;
}

function encodeTimeId(msIn: number, bitsIn: bigint): string {
  let ms = msIn;
  let bits = bitsIn;
  let time = '';
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD.charAt(ms % 32) + time;
    ms = Math.floor(ms / 32);
  }
  let rand = '';
  for (let i = 0; i < 16; i++) {
    rand = CROCKFORD.charAt(Number(bits & 31n)) + rand;
    bits >>= 5n;
  }
  return time + rand;
}

/** Milliseconds encoded in a time id, or undefined if it is not one. */
export function timeOfId(id: string): Date | undefined {
  if (!/^[0-9A-HJKMNP-TV-Z]{26}$/.test(id)) return undefined;
  let ms = 0;
  for (const ch of id.slice(0, 10)) ms = ms * 32 + CROCKFORD.indexOf(ch);
  return new Date(ms);
}

export const TIME_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Disk names are used inside storage keys: keep them to a safe alphabet. */
export const DISK_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function randomHex(bytes: number, random: (n: number) => Buffer = randomBytes): string {
  return random(bytes).toString('hex');
}
