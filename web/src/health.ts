import type { Alert, ReplicatedItem, ReplicationPolicy } from './types';

export type Health = 'healthy' | 'warning' | 'critical';

/** Above this share of its threshold an item's RPO is a warning before it is an alert. */
const RPO_WARNING_SHARE = 0.8;

/** States in which an item is not where it should be in steady protection: an operator has something to finish. */
const UNSETTLED = new Set(['failing-over', 'failed-over', 'test-failover-cleanup', 'reprotecting', 'failing-back', 'enabling']);

export interface HealthVerdict {
  readonly health: Health;
  /** Why, in words: "RPO 3 min 10 s above its threshold of 2 min", "open alert: ...". */
  readonly reason: string;
}

/**
 * One item's health, the same on every page: critical when an open critical alert
 * names it or its RPO is above the policy's threshold; warning when an open warning
 * alert names it, its RPO is above 80 % of the threshold, or an operation is under way;
 * healthy otherwise. An item in initial replication has no RPO yet and is not critical
 * for that.
 */
export function itemHealth(item: ReplicatedItem, policy: ReplicationPolicy | undefined, openAlerts: readonly Alert[]): HealthVerdict {
  const mine = openAlerts.filter((a) => a.subjectId === item.id && a.clearedAt === null);
  const critical = mine.find((a) => a.severity === 'critical');
  if (critical) return { health: 'critical', reason: critical.message };
  const threshold = policy?.rpoThresholdSeconds;
  if (threshold !== undefined && item.rpoSeconds !== null && item.rpoSeconds > threshold)
    return { health: 'critical', reason: `RPO ${item.rpoSeconds} s is above its threshold of ${threshold} s` };
  const warning = mine.find((a) => a.severity === 'warning');
  if (warning) return { health: 'warning', reason: warning.message };
  if (threshold !== undefined && item.rpoSeconds !== null && item.rpoSeconds > threshold * RPO_WARNING_SHARE)
    return { health: 'warning', reason: `RPO ${item.rpoSeconds} s is close to its threshold of ${threshold} s` };
  if (UNSETTLED.has(item.state)) return { health: 'warning', reason: `${item.state}: an operation is under way or waits to be finished` };
  if (item.state === 'initial-replication') return { health: 'healthy', reason: `initial replication ${item.initialReplicationPercent} %` };
  return { health: 'healthy', reason: item.rpoSeconds === null ? 'no recovery point yet' : `RPO ${item.rpoSeconds} s within its threshold` };
}
