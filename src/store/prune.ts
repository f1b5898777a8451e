import { LifeboatError } from '../core/errors.js';
import type { PointManifest } from '../format/manifest.js';
import type { Repository } from './repository.js';

/**
 * Retention rules, as restic and borg spell them. A point is kept when any rule
 * keeps it; the newest point of every disk is always kept (it is the base for
 * the next incremental and for journal processing).
 */
export interface RetentionRules {
  readonly keepLast?: number;
  readonly keepWithinMs?: number;
  readonly keepHourly?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
}

export interface PruneResult {
  readonly kept: PointManifest[];
  readonly removed: PointManifest[];
  readonly dryRun: boolean;
}

const BUCKETS: [keyof RetentionRules, (d: Date) => string][] = [
  ['keepHourly', (d) => d.toISOString().slice(0, 13)],
  ['keepDaily', (d) => d.toISOString().slice(0, 10)],
  ['keepWeekly', (d) => isoWeek(d)],
  ['keepMonthly', (d) => d.toISOString().slice(0, 7)],
];

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  return `${t.getUTCFullYear()}-W${Math.ceil(((t.getTime() - yearStart) / 86400000 + 1) / 7)}`;
}

/** Chooses which points of one disk the rules keep (pure; newest first internally). */
export function selectKept(points: readonly PointManifest[], rules: RetentionRules, now: Date): Set<string> {
  const newestFirst = [...points].sort((a, b) => (a.pointId < b.pointId ? 1 : -1));
  const keep = new Set<string>();
  if (newestFirst[0]) keep.add(newestFirst[0].pointId);
  newestFirst.slice(0, rules.keepLast ?? 0).forEach((p) => keep.add(p.pointId));
  if (rules.keepWithinMs !== undefined) {
    for (const p of newestFirst) if (now.getTime() - Date.parse(p.createdAt) <= rules.keepWithinMs) keep.add(p.pointId);
  }
  for (const [rule, bucketOf] of BUCKETS) {
    const n = rules[rule] ?? 0;
    const seen = new Set<string>();
    for (const p of newestFirst) {
      if (seen.size >= n) break;
      const b = bucketOf(new Date(p.createdAt));
      if (seen.has(b)) continue;
      seen.add(b);
      keep.add(p.pointId);
    }
  }
  return keep;
}

/**
 * Deletes the points no rule keeps, manifest first then index, so an
 * interruption leaves at worst an orphan index that gc removes. Chunk data is
 * freed by gc, not here.
 */
export async function prunePoints(repo: Repository, rules: RetentionRules, options: { disk?: string; dryRun?: boolean } = {}): Promise<PruneResult> {
  const values = Object.values(rules).filter((v) => v !== undefined) as number[];
  if (values.length === 0) throw new LifeboatError('USAGE', 'give at least one retention rule (--keep-last, --keep-within, --keep-daily, ...)');
  if (values.some((v) => !Number.isFinite(v) || v < 0)) throw new LifeboatError('USAGE', 'retention rules must be non-negative');
  const all = await repo.listPoints(options.disk);
  const byDisk = new Map<string, PointManifest[]>();
  for (const p of all) byDisk.set(p.disk, [...(byDisk.get(p.disk) ?? []), p]);
  const kept: PointManifest[] = [];
  const removed: PointManifest[] = [];
  for (const points of byDisk.values()) {
    const keep = selectKept(points, rules, repo.clock.now());
    for (const p of points) (keep.has(p.pointId) ? kept : removed).push(p);
  }
  if (!options.dryRun) for (const p of removed) await repo.deletePoint(p);
  return { kept, removed, dryRun: options.dryRun ?? false };
}
