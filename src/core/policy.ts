/**
 * Replication policy settings (seed step 5): validation with ranges and
 * ASR-like defaults. Every bad field is reported at once (VALIDATION, with
 * `details.errors` listing field, value and the accepted range), so an operator
 * fixes a policy in one round trip.
 *
 * Ranges (design note, 2026-11):
 * - RPO threshold 30 s .. 24 h, default 15 min (ASR's default). Alert only: it
 *   never changes how often changes are shipped (replication is continuous).
 * - Retention 1 h .. 720 h (30 days), default 24 h (ASR's default). Points live in
 *   object storage, so we allow more than ASR's 15 days; the cost is storage only.
 * - App-consistent frequency 0 (off) or 1 min .. 12 h, default 4 h (ASR's default).
 *   It must not exceed the retention, or no app-consistent point would be kept.
 * - Crash-consistent frequency 5 s .. 1 h, default 5 min (ASR's cadence). It must
 *   not exceed the app-consistent frequency when that is on.
 * Whole numbers only: the units are in the field names.
 */
import { LifeboatError } from './errors.js';
import type { ReplicationPolicy } from './model.js';

export type PolicySettings = Pick<
  ReplicationPolicy,
  'name' | 'rpoThresholdSeconds' | 'retentionHours' | 'appConsistentFrequencyMinutes' | 'crashConsistentFrequencySeconds'
>;

type NumericField = Exclude<keyof PolicySettings, 'name'>;

export const POLICY_LIMITS: Readonly<Record<NumericField, { min: number; max: number; default: number; unit: string; offValue?: number }>> = {
  rpoThresholdSeconds: { min: 30, max: 24 * 3600, default: 15 * 60, unit: 'seconds' },
  retentionHours: { min: 1, max: 30 * 24, default: 24, unit: 'hours' },
  appConsistentFrequencyMinutes: { min: 1, max: 12 * 60, default: 4 * 60, unit: 'minutes', offValue: 0 },
  // Seconds, not minutes: the journal and qemu trackers cut in milliseconds, so an RPO of a few seconds is the point.
  crashConsistentFrequencySeconds: { min: 1, max: 3600, default: 5 * 60, unit: 'seconds' },
};

export const POLICY_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;

export interface FieldError {
  readonly field: string;
  readonly value: unknown;
  readonly message: string;
}

const FIELDS: readonly string[] = ['name', ...Object.keys(POLICY_LIMITS)];

/**
 * Validates a policy as given by a user (missing numeric fields take their
 * defaults) and returns the fully resolved, frozen settings.
 */
export function validatePolicy(input: Record<string, unknown>): Readonly<PolicySettings> {
  const errors: FieldError[] = [];
  for (const key of Object.keys(input)) {
    if (!FIELDS.includes(key)) errors.push({ field: key, value: input[key], message: `unknown field '${key}'` });
  }
  const name = input['name'];
  if (typeof name !== 'string' || !POLICY_NAME_PATTERN.test(name)) {
    errors.push({
      field: 'name',
      value: name,
      message: 'name must be 1-64 characters: letters, digits, space, dot, dash or underscore, starting with a letter or digit',
    });
  }
  const values = {} as Record<NumericField, number>;
  for (const [field, limit] of Object.entries(POLICY_LIMITS) as [NumericField, (typeof POLICY_LIMITS)[NumericField]][]) {
    const raw = input[field];
    if (raw === undefined) {
      values[field] = limit.default;
      continue;
    }
    const off = limit.offValue === undefined ? '' : ` (or ${limit.offValue} for off)`;
    const range = `${limit.min}..${limit.max} ${limit.unit}${off}`;
    if (typeof raw !== 'number' || !Number.isInteger(raw)) {
      errors.push({ field, value: raw, message: `${field} must be a whole number of ${limit.unit}, ${range}` });
    } else if (raw !== limit.offValue && (raw < limit.min || raw > limit.max)) {
      errors.push({ field, value: raw, message: `${field} ${raw} is outside ${range}` });
    }
    values[field] = raw as number;
  }
  const fieldOk = (f: NumericField) => !errors.some((e) => e.field === f);
  const app = values.appConsistentFrequencyMinutes;
  if (fieldOk('appConsistentFrequencyMinutes') && fieldOk('retentionHours') && app > 0 && app > values.retentionHours * 60) {
    errors.push({
      field: 'appConsistentFrequencyMinutes',
      value: app,
      message: `appConsistentFrequencyMinutes ${app} is longer than the retention (${values.retentionHours} hours): no app-consistent point would be kept`,
    });
  }
  const crash = values.crashConsistentFrequencySeconds;
  if (fieldOk('appConsistentFrequencyMinutes') && fieldOk('crashConsistentFrequencySeconds') && app > 0 && crash > app * 60) {
    errors.push({
      field: 'crashConsistentFrequencySeconds',
      value: crash,
      message: `crashConsistentFrequencySeconds ${crash} is longer than the app-consistent frequency (${app} minutes)`,
    });
  }
  if (errors.length > 0) {
    throw new LifeboatError('VALIDATION', `invalid replication policy: ${errors.map((e) => e.message).join('; ')}`, { details: { errors } });
  }
  return Object.freeze({ name: name as string, ...values });
}

/** The settings of the policy a vault creates for itself, like ASR's default policy. */
export function defaultPolicy(name = 'default-policy'): Readonly<PolicySettings> {
  return validatePolicy({ name });
}
