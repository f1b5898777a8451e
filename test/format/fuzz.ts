import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LifeboatError } from '../../src/core/errors.js';

/** The only ways a decoder may refuse bytes: damage, or a newer format. */
export const REFUSALS = new Set(['CORRUPT_OBJECT', 'STORE_UNSUPPORTED_VERSION']);

/** Runs `decode` and fails unless it returns or throws a LifeboatError with one of the refusal codes. */
export function decodesOrRefuses(decode: () => unknown): void {
  try {
    decode();
  } catch (err) {
    assert.ok(err instanceof LifeboatError, `threw a non-LifeboatError: ${String(err)}`);
    assert.ok(REFUSALS.has(err.code), `threw ${err.code}: ${err.message}`);
  }
}

/** Asserts that `fn` throws a LifeboatError with `code`; returns it for further checks. */
export function throwsCode(fn: () => unknown, code: string): LifeboatError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof LifeboatError, `expected LifeboatError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, nothing was thrown`);
}

/** Async twin of throwsCode. */
export async function rejectsCode(p: Promise<unknown>, code: string): Promise<LifeboatError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof LifeboatError, `expected LifeboatError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, nothing was thrown`);
}

/**
 * Damaged variants of a valid encoding: truncated, extended, with flipped
 * bytes, or with random bytes spliced in. They reach deeper into a decoder
 * than random buffers, which almost all fail at the magic.
 */
export function damaged(valid: Buffer): fc.Arbitrary<Buffer> {
  const n = valid.length;
  return fc.oneof(
    fc.integer({ min: 0, max: Math.max(0, n - 1) }).map((cut) => Buffer.from(valid.subarray(0, cut))),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((tail) => Buffer.concat([valid, tail])),
    fc
      .array(fc.tuple(fc.nat({ max: Math.max(0, n - 1) }), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 })
      .map((flips) => {
        const b = Buffer.from(valid);
        for (const [at, x] of flips) if (at < b.length) b[at] = (b[at] as number) ^ x;
        return b;
      }),
    fc.tuple(fc.nat({ max: n }), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([at, junk]) => {
      const b = Buffer.from(valid);
      Buffer.from(junk).copy(b, Math.min(at, Math.max(0, n - junk.length)));
      return b;
    }),
  );
}
