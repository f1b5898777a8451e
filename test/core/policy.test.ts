import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isLifeboatError, type LifeboatError } from '../../src/core/errors.js';
import { POLICY_LIMITS, defaultPolicy, validatePolicy, type FieldError } from '../../src/core/policy.js';

function errorsOf(input: Record<string, unknown>): FieldError[] {
  try {
    validatePolicy(input);
  } catch (e) {
    assert.ok(isLifeboatError(e, 'VALIDATION'), String(e));
    return (e as LifeboatError).details.errors as FieldError[];
  }
  return [];
}

test('defaults are ASR-like: RPO threshold 15 min, retention 24 h, app-consistent 4 h, crash-consistent 5 min', () => {
  assert.deepEqual(defaultPolicy(), {
    name: 'default-policy',
    rpoThresholdSeconds: 900,
    retentionHours: 24,
    appConsistentFrequencyMinutes: 240,
    crashConsistentFrequencySeconds: 300,
  });
  assert.ok(Object.isFrozen(defaultPolicy()));
});

test('each range is accepted at both ends and refused one step outside', () => {
  const base = { name: 'p', retentionHours: 720, appConsistentFrequencyMinutes: 1, crashConsistentFrequencySeconds: 5 };
  const cases: [string, number, number][] = [
    ['rpoThresholdSeconds', 30, 86400],
    ['retentionHours', 1, 720],
    ['crashConsistentFrequencySeconds', 1, 60],
  ];
  for (const [field, min, max] of cases) {
    assert.deepEqual(errorsOf({ ...base, [field]: min }), [], `${field}=${min}`);
    assert.deepEqual(errorsOf({ ...base, [field]: max }), [], `${field}=${max}`);
    assert.deepEqual(errorsOf({ ...base, [field]: min - 1 }).map((e) => e.field), [field]);
  }
  assert.deepEqual(errorsOf({ ...base, rpoThresholdSeconds: 86401 }).map((e) => e.field), ['rpoThresholdSeconds']);
  assert.deepEqual(errorsOf({ ...base, retentionHours: 721 }).map((e) => e.field), ['retentionHours']);
  assert.deepEqual(errorsOf({ name: 'p', appConsistentFrequencyMinutes: 0, crashConsistentFrequencySeconds: 3600 }), [], '0 = off');
  assert.deepEqual(errorsOf({ name: 'p', appConsistentFrequencyMinutes: 0, crashConsistentFrequencySeconds: 3601 }).map((e) => e.field), [
    'crashConsistentFrequencySeconds',
  ]);
  assert.deepEqual(errorsOf({ name: 'p', retentionHours: 12, appConsistentFrequencyMinutes: 720 }), []);
  assert.deepEqual(errorsOf({ name: 'p', retentionHours: 12, appConsistentFrequencyMinutes: 721 }).map((e) => e.field), [
    'appConsistentFrequencyMinutes',
  ]);
});

test('cross-field rules: app-consistent within retention, crash-consistent not rarer than app-consistent', () => {
  const [a] = errorsOf({ name: 'p', retentionHours: 2, appConsistentFrequencyMinutes: 180 });
  assert.equal(a?.field, 'appConsistentFrequencyMinutes');
  assert.match(a?.message ?? '', /longer than the retention \(2 hours\)/);
  const [c] = errorsOf({ name: 'p', appConsistentFrequencyMinutes: 1, crashConsistentFrequencySeconds: 61 });
  assert.equal(c?.field, 'crashConsistentFrequencySeconds');
});

test('every bad field is listed at once, with readable messages', () => {
  try {
    validatePolicy({ name: '', rpoThresholdSeconds: 10, retentionHours: 1.5, appConsistentFrequencyMinutes: '60', crashConsistentFrequencySeconds: 0, colour: 'red' });
    assert.fail('should refuse');
  } catch (e) {
    assert.ok(isLifeboatError(e, 'VALIDATION'));
    const fields = (e.details.errors as FieldError[]).map((x) => x.field).sort();
    assert.deepEqual(fields, ['appConsistentFrequencyMinutes', 'colour', 'crashConsistentFrequencySeconds', 'name', 'retentionHours', 'rpoThresholdSeconds']);
    assert.match(e.message, /rpoThresholdSeconds 10 is outside 30\.\.86400 seconds/);
    assert.match(e.message, /retentionHours must be a whole number of hours/);
    assert.match(e.message, /unknown field 'colour'/);
  }
});

test('any input either validates to in-range values or is refused with VALIDATION', () => {
  const num = fc.oneof(fc.integer({ min: -10, max: 100_000 }), fc.double(), fc.constant(undefined), fc.string());
  fc.assert(
    fc.property(fc.record({ name: fc.string(), r: num, h: num, a: num, c: num }), (x) => {
      const input: Record<string, unknown> = { name: x.name };
      if (x.r !== undefined) input['rpoThresholdSeconds'] = x.r;
      if (x.h !== undefined) input['retentionHours'] = x.h;
      if (x.a !== undefined) input['appConsistentFrequencyMinutes'] = x.a;
      if (x.c !== undefined) input['crashConsistentFrequencySeconds'] = x.c;
      let p;
      try {
        p = validatePolicy(input);
      } catch (e) {
        assert.ok(isLifeboatError(e, 'VALIDATION'));
        return;
      }
      for (const [field, l] of Object.entries(POLICY_LIMITS)) {
        const v = (p as unknown as Record<string, number>)[field]!;
        assert.ok(Number.isInteger(v) && (v === l.offValue || (v >= l.min && v <= l.max)), `${field}=${v}`);
      }
    }),
    { numRuns: 1000 },
  );
});
