import { ApiError } from './api';

/**
 * The names of the fields a 400 VALIDATION answer names ("/retentionHours" →
 * "retentionHours"), so a form marks those inputs aria-invalid next to the readable
 * message of <ErrorMessage>.
 */
export function invalidFields(err: unknown): ReadonlySet<string> {
  if (!(err instanceof ApiError)) return new Set();
  return new Set(err.fields.map((f) => f.field.split('/').filter(Boolean)[0] ?? '').filter(Boolean));
}

/** A whole number from an input's text, or undefined when empty (the API's default then applies). */
export function numberOrUndefined(text: string, scale = 1): number | undefined {
  const t = text.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? Math.round(n * scale) : Number.NaN;
}

/** Saves `text` as a file named `name` through a Blob link (no server round trip). */
export function downloadText(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
