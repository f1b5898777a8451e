import { randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * A 26-character, time-ordered identifier (ULID layout: 48-bit milliseconds then
 * 80 random bits, Crockford base32). Sorting ids as strings sorts them by time.
 */
export function newTimeId(now: Date, random: (n: number) => Buffer = randomBytes): string {
  let ms = now.getTime();
  if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError('time before 1970 cannot be encoded');
  let time = '';
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD.charAt(ms % 32) + time;
    ms = Math.floor(ms / 32);
  }
  const bytes = random(10);
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
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
