import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createHmac } from 'node:crypto';
import { isLifeboatError } from '../../src/core/errors.js';
import {
  checkClockSkew,
  issueRegistrationKey,
  keyExpiringSoon,
  verifyRegistrationKey,
  REGISTRATION_KEY_VALIDITY_MS,
} from '../../src/core/registration-key.js';
import { FakeClock } from '../helpers/store.js';

const SECRET = Buffer.alloc(32, 7);
const OTHER = Buffer.alloc(32, 8);
const T0 = new Date('2026-11-01T00:00:00Z');
const ids = { vaultId: 'V1', keyId: 'K1' };
const at = (ms: number) => new Date(T0.getTime() + ms);
const code = (c: string) => (e: unknown) => isLifeboatError(e) && e.code === c;

test('a fresh key verifies and carries its vault, id, purpose and a 5-day expiry', () => {
  const { text, payload } = issueRegistrationKey(SECRET, ids, T0);
  assert.match(text, /^lbrk1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
  assert.equal(payload.expiresAt, '2026-11-06T00:00:00.000Z');
  assert.deepEqual(verifyRegistrationKey(SECRET, text, { now: T0 }), payload);
  assert.deepEqual(verifyRegistrationKey(SECRET, `  ${text}\n`, { now: T0 }), payload, 'pasted with whitespace');
});

test('valid at exactly 5 days, expired 1 ms later, with the expiry named', () => {
  const clock = new FakeClock(T0.getTime());
  const { text } = issueRegistrationKey(SECRET, ids, clock.now());
  clock.advance(REGISTRATION_KEY_VALIDITY_MS);
  verifyRegistrationKey(SECRET, text, { now: clock.now() });
  clock.advance(1);
  assert.throws(
    () => verifyRegistrationKey(SECRET, text, { now: clock.now() }),
    (e: unknown) => isLifeboatError(e, 'REGISTRATION_KEY_EXPIRED') && e.message.includes('2026-11-06T00:00:00.000Z') && e.details.expiresAt === '2026-11-06T00:00:00.000Z',
  );
});

test('forged, tampered, truncated and other-purpose keys are invalid', () => {
  const { text } = issueRegistrationKey(SECRET, ids, T0);
  const [prefix, body, mac] = text.split('.') as [string, string, string];
  assert.throws(() => verifyRegistrationKey(OTHER, text, { now: T0 }), code('REGISTRATION_KEY_INVALID'), 'another vault secret');
  const forgedBody = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body, 'base64url').toString()), vaultId: 'V2' })).toString('base64url');
  assert.throws(() => verifyRegistrationKey(SECRET, `${prefix}.${forgedBody}.${mac}`, { now: T0 }), code('REGISTRATION_KEY_INVALID'), 'tampered payload');
  const flipped = mac.slice(0, -2) + (mac.at(-2) === 'A' ? 'B' : 'A') + mac.at(-1);
  assert.throws(() => verifyRegistrationKey(SECRET, `${prefix}.${body}.${flipped}`, { now: T0 }), code('REGISTRATION_KEY_INVALID'), 'flipped signature');
  assert.throws(() => verifyRegistrationKey(SECRET, text.slice(0, -5), { now: T0 }), code('REGISTRATION_KEY_INVALID'), 'truncated');
  assert.throws(() => verifyRegistrationKey(SECRET, `${prefix}.${body}`, { now: T0 }), code('REGISTRATION_KEY_INVALID'), 'no signature');
  assert.throws(() => verifyRegistrationKey(SECRET, `lbrk2.${body}.${mac}`, { now: T0 }), code('REGISTRATION_KEY_INVALID'), 'other version');
  // A correctly signed key for another purpose (signed here with the secret, as a key of another kind would be).
  const other = Buffer.from(JSON.stringify({ vaultId: 'V1', keyId: 'K1', purpose: 'register-agent', issuedAt: T0.toISOString(), expiresAt: at(1000).toISOString() })).toString('base64url');
  const otherMac = createHmac('sha256', SECRET).update(`lbrk1.${other}`).digest('base64url');
  assert.throws(
    () => verifyRegistrationKey(SECRET, `lbrk1.${other}.${otherMac}`, { now: T0 }),
    (e: unknown) => isLifeboatError(e, 'REGISTRATION_KEY_INVALID') && /wrong purpose/.test(e.message),
  );
});

test('any garbage or mutation of a key yields only REGISTRATION_KEY_INVALID or EXPIRED, never another error', () => {
  const { text } = issueRegistrationKey(SECRET, ids, T0);
  const mutated = fc
    .tuple(fc.nat({ max: text.length - 1 }), fc.string({ maxLength: 3 }), fc.nat({ max: 3 }))
    .map(([i, ins, del]) => text.slice(0, i) + ins + text.slice(i + del))
    .filter((t) => t !== text);
  const garbage = fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom('a', '.', '-', '_', 'l', 'b', 'r', 'k', '1', '=') }), mutated);
  fc.assert(
    fc.property(garbage, fc.integer({ min: -1e9, max: 1e10 }), (t, offset) => {
      try {
        verifyRegistrationKey(SECRET, t, { now: at(offset) });
        // Only the genuine key (e.g. whitespace around it) may pass.
        assert.equal(t.trim(), text);
      } catch (e) {
        assert.ok(isLifeboatError(e, 'REGISTRATION_KEY_INVALID') || isLifeboatError(e, 'REGISTRATION_KEY_EXPIRED'), String(e));
      }
    }),
    { numRuns: 3000 },
  );
});

test('clock skew: 4:59 either way is accepted, 5:01 either way is refused with both times and the difference', () => {
  const s = 1000;
  for (const sign of [1, -1]) {
    checkClockSkew(T0, at(sign * (5 * 60 - 1) * s));
    checkClockSkew(T0, at(sign * 5 * 60 * s));
    assert.throws(
      () => checkClockSkew(T0, at(sign * (5 * 60 + 1) * s)),
      (e: unknown) =>
        isLifeboatError(e, 'CLOCK_SKEW') &&
        e.details.differenceMs === sign * 301_000 &&
        e.details.serverTime === T0.toISOString() &&
        e.details.callerTime === at(sign * 301_000).toISOString() &&
        e.message.includes(sign > 0 ? 'ahead of' : 'behind') &&
        e.message.includes('301 s'),
    );
  }
  assert.throws(() => checkClockSkew(T0, new Date(Number.NaN)), code('CLOCK_SKEW'));
});

test('registration checks the caller clock after the key itself', () => {
  const { text } = issueRegistrationKey(SECRET, ids, T0);
  verifyRegistrationKey(SECRET, text, { now: T0, callerClock: at(299_000) });
  assert.throws(() => verifyRegistrationKey(SECRET, text, { now: T0, callerClock: at(-301_000) }), code('CLOCK_SKEW'));
  assert.throws(() => verifyRegistrationKey(OTHER, text, { now: T0, callerClock: at(-301_000) }), code('REGISTRATION_KEY_INVALID'));
});

test('keyExpiringSoon is true only inside the window of a usable key', () => {
  const key = { expiresAt: at(REGISTRATION_KEY_VALIDITY_MS).toISOString(), revoked: false };
  const day = 24 * 3600 * 1000;
  assert.equal(keyExpiringSoon(key, at(REGISTRATION_KEY_VALIDITY_MS - day - 1), day), false);
  assert.equal(keyExpiringSoon(key, at(REGISTRATION_KEY_VALIDITY_MS - day), day), true);
  assert.equal(keyExpiringSoon(key, at(REGISTRATION_KEY_VALIDITY_MS), day), true);
  assert.equal(keyExpiringSoon(key, at(REGISTRATION_KEY_VALIDITY_MS + 1), day), false, 'already expired');
  assert.equal(keyExpiringSoon({ ...key, revoked: true }, at(REGISTRATION_KEY_VALIDITY_MS - 1), day), false, 'revoked');
});

test('a short vault secret is a bug, not a key error', () => {
  assert.throws(() => issueRegistrationKey(Buffer.alloc(8), ids, T0), code('INTERNAL'));
});
