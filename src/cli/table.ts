/** A tiny printer for the control-plane commands' human output: aligned columns and key/value blocks. */

export type Cell = string | number | boolean | null | undefined;

function text(c: Cell): string {
  if (c === null || c === undefined || c === '') return '-';
  return String(c);
}

/** Columns padded to their widest cell, two spaces apart; `empty` when there are no rows. */
export function table(headers: readonly string[], rows: readonly (readonly Cell[])[], empty = 'none'): string {
  if (rows.length === 0) return empty;
  const cells = [headers.map((h) => h.toUpperCase()), ...rows.map((r) => headers.map((_, i) => text(r[i])))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] as string).length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ')).join('\n');
}

/** "key: value" lines with the keys aligned. */
export function fields(pairs: readonly (readonly [string, Cell])[]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${text(v)}`).join('\n');
}

/** A 20-character progress bar: [##########----------] 50%. */
export function bar(percent: number): string {
  const p = Math.max(0, Math.min(100, Math.round(percent)));
  const filled = Math.round(p / 5);
  return `[${'#'.repeat(filled)}${'-'.repeat(20 - filled)}] ${String(p).padStart(3)}%`;
}

/** Seconds as the largest whole unit: 900 -> 15m, 86400 -> 24h. */
export function seconds(n: number): string {
  if (n === 0) return '0';
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60]] as const) if (n % size === 0) return `${n / size}${unit}`;
  return `${n}s`;
}

/**
 * Any JSON object as a human block, for answers whose shape is the server's to
 * choose (check results): scalars as "key: value", nested objects with dotted
 * keys, arrays of objects as indented tables.
 */
export function describe(value: unknown): string {
  const pairs: [string, Cell][] = [];
  const blocks: string[] = [];
  const walk = (v: unknown, prefix: string): void => {
    if (Array.isArray(v)) {
      if (v.every((x) => x !== null && typeof x === 'object' && !Array.isArray(x))) {
        const rows = v as Record<string, unknown>[];
        const headers = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => typeof r[k] !== 'object' || r[k] === null)))];
        const t = table(headers, rows.map((r) => headers.map((h) => r[h] as Cell)));
        blocks.push(`${prefix}:\n${t.split('\n').map((l) => `  ${l}`).join('\n')}`);
      } else pairs.push([prefix, v.join(', ')]);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) walk(x, prefix ? `${prefix}.${k}` : k);
    } else pairs.push([prefix || 'value', v as Cell]);
  };
  walk(value, '');
  return [pairs.length > 0 ? fields(pairs) : '', ...blocks].filter((s) => s !== '').join('\n');
}
