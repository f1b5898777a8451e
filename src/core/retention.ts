/**
 * Which recovery points of a continuously replicated disk are kept. Points come every
 * few seconds; keeping each for the whole retention would cost one point index per cut
 * (thousands a day), so older points are thinned the way operators expect of a DR
 * product: every point of the last minutes (the lowest-RPO choices for a failover), one
 * a minute for the last hour, one every five minutes up to the retention (the seed's
 * crash-consistent granularity), and every app-consistent point within the retention.
 * The newest point and the newest app-consistent point are always kept.
 */

export interface RetainedPoint {
  readonly id: string;
  readonly capturedAtMs: number;
  readonly appConsistent: boolean;
}

export const THINNING = {
  /** Every point younger than this is kept. */
  allWithinMs: 2 * 60_000,
  /** Then one per minute for the last hour. */
  perMinuteWithinMs: 3_600_000,
  /** Then one per five minutes up to the retention. */
  bucketMs: 5 * 60_000,
} as const;

/** The ids to keep, given every point of one disk (any order) and the policy's retention. */
export function pointsToKeep(points: readonly RetainedPoint[], nowMs: number, retentionHours: number): Set<string> {
  const keep = new Set<string>();
  if (points.length === 0) return keep;
  const sorted = [...points].sort((a, b) => a.capturedAtMs - b.capturedAtMs || (a.id < b.id ? -1 : 1));
  keep.add((sorted[sorted.length - 1] as RetainedPoint).id);
  const newestApp = [...sorted].reverse().find((p) => p.appConsistent);
  if (newestApp) keep.add(newestApp.id);
  const cutoff = nowMs - retentionHours * 3_600_000;
  const buckets = new Set<string>();
  for (const p of sorted) {
    if (p.capturedAtMs < cutoff) continue;
    const age = nowMs - p.capturedAtMs;
    if (age <= THINNING.allWithinMs || p.appConsistent) {
      keep.add(p.id);
      continue;
    }
    // The oldest point of each bucket stands for it (buckets are absolute, so they stay put as time passes).
    const width = age <= THINNING.perMinuteWithinMs ? 60_000 : THINNING.bucketMs;
    const bucket = `${width}:${Math.floor(p.capturedAtMs / width)}`;
    if (!buckets.has(bucket)) {
      buckets.add(bucket);
      keep.add(p.id);
    }
  }
  return keep;
}
