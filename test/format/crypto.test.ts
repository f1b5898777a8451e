import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { CODEC_NONE, CODEC_ZSTD, decode, encode } from '../../src/format/codec.js';
import { aad, ENVELOPE_OVERHEAD, MasterKey, newRecoveryKey, open, parseRecoveryKey, seal } from '../../src/format/crypto.js';
import { seededBytes, textBlock } from '../helpers/images.js';
import { throwsCode } from './fuzz.js';

const ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';

// ---- recovery keys ----------------------------------------------------------

test('a recovery key is eight groups of six plus a check group, and parses back to 30 bytes', () => {
  for (let i = 0; i < 50; i++) {
    const key = newRecoveryKey();
    assert.match(key, /^([A-HJ-NP-Z2-9]{6}-){8}[A-HJ-NP-Z2-9]{4}$/);
    const bytes = parseRecoveryKey(key);
    assert.ok(bytes && bytes.length === 30);
    // People type keys in lower case, without dashes, with spaces and stray whitespace.
    assert.deepEqual(parseRecoveryKey(key.toLowerCase()), bytes);
    assert.deepEqual(parseRecoveryKey(key.replace(/-/g, '')), bytes);
    assert.deepEqual(parseRecoveryKey(`  ${key.replace(/-/g, ' ')}\n`), bytes);
  }
  assert.notEqual(newRecoveryKey(), newRecoveryKey());
});

test('the check group catches a mistyped character', () => {
  // The check is 20 bits of an HMAC: a substitution slips through with p = 2^-20 per try.
  fc.assert(
    fc.property(fc.nat({ max: 51 }), fc.integer({ min: 1, max: 31 }), (pos, shift) => {
      const clean = newRecoveryKey().replace(/-/g, '');
      const typo = clean.slice(0, pos) + ALPHABET.charAt((ALPHABET.indexOf(clean.charAt(pos)) + shift) % 32) + clean.slice(pos + 1);
      assert.notEqual(typo, clean);
      assert.equal(parseRecoveryKey(typo), undefined, `typo at ${pos} accepted`);
    }),
    { numRuns: 300 },
  );
});

test('the check group catches swapped neighbours and a dropped character', () => {
  fc.assert(
    fc.property(fc.nat({ max: 50 }), (pos) => {
      const clean = newRecoveryKey().replace(/-/g, '');
      fc.pre(clean.charAt(pos) !== clean.charAt(pos + 1));
      const swapped = clean.slice(0, pos) + clean.charAt(pos + 1) + clean.charAt(pos) + clean.slice(pos + 2);
      assert.equal(parseRecoveryKey(swapped), undefined);
      assert.equal(parseRecoveryKey(clean.slice(0, pos) + clean.slice(pos + 1)), undefined);
    }),
    { numRuns: 200 },
  );
});

test('characters outside the alphabet (0, 1, I, O) and passphrases are not recovery keys', () => {
  const clean = newRecoveryKey().replace(/-/g, '');
  for (const ch of ['0', '1', 'I', 'O', '!']) assert.equal(parseRecoveryKey(ch + clean.slice(1)), undefined, ch);
  assert.equal(parseRecoveryKey('correct horse battery staple'), undefined);
  assert.equal(parseRecoveryKey(''), undefined);
});

// ---- seal / open -----------------------------------------------------------

const key = randomBytes(32);
const place = aad('store', 'points/vm1/X.manifest');
const plaintext = fc.oneof(
  fc.uint8Array({ maxLength: 3000 }).map((b) => Buffer.from(b)),
  fc.nat({ max: 20000 }).map((n) => textBlock(n, n)),
  fc.nat({ max: 20000 }).map((n) => Buffer.alloc(n)),
);

test('seal then open returns the plaintext, compressed or not', () => {
  fc.assert(
    fc.property(plaintext, fc.boolean(), (data, compress) => {
      const env = seal(key, data, place, compress);
      assert.deepEqual(open(key, env, place, 'obj'), data);
      assert.deepEqual(open(key, env, place, 'obj', data.length), data);
      if (!compress) assert.equal(env.length, data.length + ENVELOPE_OVERHEAD + 1);
    }),
    { numRuns: 200 },
  );
});

test('open with the wrong key or the wrong AAD is CORRUPT_OBJECT', () => {
  fc.assert(
    fc.property(plaintext, fc.string({ minLength: 1, maxLength: 20 }), (data, other) => {
      const env = seal(key, data, place);
      throwsCode(() => open(randomBytes(32), env, place, 'obj'), 'CORRUPT_OBJECT');
      fc.pre(!aad(other).equals(place));
      throwsCode(() => open(key, env, aad(other), 'obj'), 'CORRUPT_OBJECT');
      throwsCode(() => open(key, env, aad('store', 'points/vm1/Y.manifest'), 'obj'), 'CORRUPT_OBJECT');
    }),
    { numRuns: 100 },
  );
});

test('a flipped bit anywhere in an envelope is CORRUPT_OBJECT', () => {
  fc.assert(
    fc.property(
      plaintext.chain((data) => {
        const env = seal(key, data, place);
        return fc.tuple(fc.constant(env), fc.nat({ max: env.length - 1 }), fc.integer({ min: 1, max: 255 }));
      }),
      ([env, at, x]) => {
        const bad = Buffer.from(env);
        bad[at] = (bad[at] as number) ^ x;
        const err = throwsCode(() => open(key, bad, place, 'points/vm1/X.manifest'), 'CORRUPT_OBJECT');
        assert.match(err.message, /points\/vm1\/X\.manifest/);
      },
    ),
    { numRuns: 300 },
  );
});

test('a truncated or extended envelope is CORRUPT_OBJECT', () => {
  fc.assert(
    fc.property(
      plaintext.chain((data) => {
        const env = seal(key, data, place);
        return fc.tuple(fc.constant(env), fc.nat({ max: env.length - 1 }), fc.uint8Array({ minLength: 1, maxLength: 8 }));
      }),
      ([env, cut, extra]) => {
        throwsCode(() => open(key, env.subarray(0, cut), place, 'obj'), 'CORRUPT_OBJECT');
        throwsCode(() => open(key, Buffer.concat([env, extra]), place, 'obj'), 'CORRUPT_OBJECT');
      },
    ),
    { numRuns: 300 },
  );
});

test('random bytes never open and only ever raise CORRUPT_OBJECT', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (raw) => {
      throwsCode(() => open(key, Buffer.from(raw), place, 'obj'), 'CORRUPT_OBJECT');
    }),
    { numRuns: 500 },
  );
});

test('open checks the decoded length when the caller knows it', () => {
  const env = seal(key, Buffer.alloc(64, 7), place);
  throwsCode(() => open(key, env, place, 'obj', 63), 'CORRUPT_OBJECT');
});

test('an envelope sealed twice differs (fresh nonce) but opens to the same bytes', () => {
  const data = textBlock(1000, 3);
  const a = seal(key, data, place);
  const b = seal(key, data, place);
  assert.notDeepEqual(a, b);
  assert.deepEqual(open(key, a, place, 'a'), open(key, b, place, 'b'));
});

// ---- codec -----------------------------------------------------------------

test('codec stores incompressible data raw and compressible data as zstd', () => {
  const random = seededBytes(64 * 1024, 9);
  const r = encode(random);
  assert.equal(r.codec, CODEC_NONE);
  assert.equal(r.payload, random);
  const sealedRandom = seal(key, random, place);
  assert.equal(sealedRandom.length, random.length + ENVELOPE_OVERHEAD + 1, 'random data must not grow by more than the envelope');

  for (const data of [textBlock(64 * 1024, 1), Buffer.alloc(64 * 1024)]) {
    const c = encode(data);
    assert.equal(c.codec, CODEC_ZSTD);
    assert.ok(c.payload.length < data.length / 2, `${c.payload.length} of ${data.length}`);
    assert.deepEqual(decode(c.codec, c.payload, data.length), data);
    assert.ok(seal(key, data, place).length < data.length / 2);
  }
});

test('codec round-trips anything, and decode refuses unknown codecs and bad zstd', () => {
  fc.assert(
    fc.property(plaintext, (data) => {
      const { codec, payload } = encode(data);
      assert.ok(codec === CODEC_ZSTD ? payload.length < data.length : payload === data);
      assert.deepEqual(decode(codec, payload, data.length), data);
    }),
    { numRuns: 200 },
  );
  throwsCode(() => decode(7, Buffer.alloc(4)), 'CORRUPT_OBJECT');
  throwsCode(() => decode(-1, Buffer.alloc(4)), 'CORRUPT_OBJECT');
  throwsCode(() => decode(CODEC_ZSTD, Buffer.from('not zstd at all')), 'CORRUPT_OBJECT');
  throwsCode(() => decode(CODEC_NONE, Buffer.alloc(4), 5), 'CORRUPT_OBJECT');
});

// ---- master key ------------------------------------------------------------

test('master key halves and derived keys are distinct and deterministic', () => {
  const material = randomBytes(64);
  const a = new MasterKey(material);
  const b = new MasterKey(Buffer.from(material));
  assert.deepEqual(a.encKey, material.subarray(0, 32));
  assert.deepEqual(a.idKey, material.subarray(32));
  assert.notDeepEqual(a.macKey, a.encKey);
  assert.equal(a.mac('x'), b.mac('x'));
  assert.notEqual(a.mac('x'), a.mac('y'));
  assert.deepEqual(a.packKey(Buffer.alloc(16, 1)), b.packKey(Buffer.alloc(16, 1)));
  assert.notDeepEqual(a.packKey(Buffer.alloc(16, 1)), a.packKey(Buffer.alloc(16, 2)));
  throwsCode(() => new MasterKey(Buffer.alloc(63)), 'INTERNAL');
});
