/**
 * Alert rules (seed: "the RPO threshold only raises an alert"). Pure: given what
 * the vault knows now and the alerts that are open, say which to raise and which
 * to clear. The vault applies the answer in one transaction; applying it and
 * evaluating again changes nothing (a test proves it), so the rules can run on
 * every heartbeat and on a timer without flapping.
 *
 * Rules, one alert open per (kind, subject):
 * - rpo-threshold-exceeded: warning when an item's RPO exceeds its policy's
 *   threshold, critical beyond `rpoCriticalRatio` x threshold (a warning is
 *   replaced by a critical; a critical is never downgraded while open). Cleared
 *   only when the RPO falls to `rpoClearRatio` x threshold or below (hysteresis),
 *   or when the item no longer replicates forward (failed over, disabled...).
 *   An unknown RPO neither raises nor clears.
 * - heartbeat-lost: critical when a server's last heartbeat (or its registration,
 *   if it never sent one) is older than `heartbeatTimeoutMs`; cleared by a fresh one.
 * - job-failed: critical for a failed job until a later job of the same kind on
 *   the same item succeeds. Jobs with open alerts must be in the input.
 * - registration-key-expiring: warning while a usable key expires within
 *   `keyExpiryWarningMs`; cleared once revoked or expired.
 * - spool-filling: a process server's spool at `spoolWarningRatio` (80 %) of its limit
 *   is a warning, at `spoolCriticalRatio` (95 %) critical (the severity follows the
 *   level both ways); cleared below the warning ratio. A spool without a limit never alerts.
 * - journal-gap: critical while the replica processor finds a gap in an item's
 *   journal (a segment missing before present ones: points stop there); cleared
 *   once processing finds none.
 * An alert of these kinds whose subject is no longer in the input is cleared.
 * Alerts of other kinds (`drill-failed`, raised and cleared by the drill scheduler)
 * are left alone.
 */
import type { Alert, AlertKind, AlertSeverity, ItemState, Job, RegistrationKey } from './model.js';
import { keyExpiringSoon } from './registration-key.js';

/** The kinds these rules own: raised and cleared here only. */
export const EVALUATED_KINDS: readonly AlertKind[] = [
  'rpo-threshold-exceeded',
  'heartbeat-lost',
  'job-failed',
  'registration-key-expiring',
  'spool-filling',
  'journal-gap',
];

export interface AlertRules {
  readonly heartbeatTimeoutMs: number;
  readonly rpoClearRatio: number;
  readonly rpoCriticalRatio: number;
  readonly keyExpiryWarningMs: number;
  readonly spoolWarningRatio: number;
  readonly spoolCriticalRatio: number;
}

export const DEFAULT_ALERT_RULES: AlertRules = {
  heartbeatTimeoutMs: 5 * 60 * 1000,
  rpoClearRatio: 0.8,
  rpoCriticalRatio: 2,
  keyExpiryWarningMs: 24 * 3600 * 1000,
  spoolWarningRatio: 0.8,
  spoolCriticalRatio: 0.95,
};

/** States in which the item replicates towards the recovery site, so its RPO means something. */
const RPO_STATES: readonly ItemState[] = ['protected', 'test-failover', 'test-failover-cleanup', 'reprotected'];

export interface AlertInput {
  readonly now: Date;
  readonly items: readonly { id: string; state: ItemState; rpoSeconds: number | null; rpoThresholdSeconds: number }[];
  readonly servers: readonly { id: string; name: string; lastHeartbeatAt: string | null; registeredAt: string }[];
  readonly jobs: readonly Pick<Job, 'id' | 'kind' | 'itemId' | 'state' | 'createdAt' | 'error'>[];
  readonly keys: readonly Pick<RegistrationKey, 'id' | 'expiresAt' | 'revoked'>[];
  readonly open: readonly Pick<Alert, 'id' | 'kind' | 'severity' | 'subjectId'>[];
  readonly processServers?: readonly { id: string; name: string; spoolUsedBytes: number; spoolLimitBytes: number }[];
  /** Items whose journal has a gap, with what the processor found. */
  readonly journalGaps?: readonly { subjectId: string; message: string }[];
}

export interface AlertDraft {
  readonly kind: AlertKind;
  readonly severity: AlertSeverity;
  readonly subjectId: string;
  readonly message: string;
}

export interface AlertDecision {
  readonly raise: AlertDraft[];
  readonly clear: { id: string; reason: string }[];
}

export function evaluateAlerts(input: AlertInput, rules: AlertRules = DEFAULT_ALERT_RULES): AlertDecision {
  const raise: AlertDraft[] = [];
  const clear: { id: string; reason: string }[] = [];
  const openOf = (kind: AlertKind, subjectId: string) => input.open.find((a) => a.kind === kind && a.subjectId === subjectId);
  const seen = new Set<string>();
  const key = (kind: AlertKind, subjectId: string) => `${kind}\u0000${subjectId}`;

  for (const item of input.items) {
    if (seen.has(key('rpo-threshold-exceeded', item.id))) continue; // a duplicate in the input: the first one decides
    seen.add(key('rpo-threshold-exceeded', item.id));
    const open = openOf('rpo-threshold-exceeded', item.id);
    if (!RPO_STATES.includes(item.state)) {
      if (open) clear.push({ id: open.id, reason: `item is ${item.state}` });
      continue;
    }
    const rpo = item.rpoSeconds;
    if (rpo === null) continue;
    const t = item.rpoThresholdSeconds;
    const severity: AlertSeverity | null = rpo > t * rules.rpoCriticalRatio ? 'critical' : rpo > t ? 'warning' : null;
    const message = `RPO ${rpo} s exceeds the policy threshold of ${t} s`;
    if (open) {
      if (rpo <= t * rules.rpoClearRatio) clear.push({ id: open.id, reason: `RPO back to ${rpo} s` });
      else if (severity === 'critical' && open.severity === 'warning') {
        clear.push({ id: open.id, reason: 'escalated to critical' });
        raise.push({ kind: 'rpo-threshold-exceeded', severity, subjectId: item.id, message });
      }
    } else if (severity) raise.push({ kind: 'rpo-threshold-exceeded', severity, subjectId: item.id, message });
  }

  for (const server of input.servers) {
    if (seen.has(key('heartbeat-lost', server.id))) continue; // a duplicate in the input: the first one decides
    seen.add(key('heartbeat-lost', server.id));
    const open = openOf('heartbeat-lost', server.id);
    const last = server.lastHeartbeatAt ?? server.registeredAt;
    const ageMs = input.now.getTime() - Date.parse(last);
    const lost = ageMs > rules.heartbeatTimeoutMs;
    if (lost && !open) {
      raise.push({
        kind: 'heartbeat-lost',
        severity: 'critical',
        subjectId: server.id,
        message: `no heartbeat from ${server.name} since ${last} (${Math.round(ageMs / 1000)} s)`,
      });
    } else if (!lost && open) clear.push({ id: open.id, reason: `heartbeat at ${last}` });
  }

  for (const job of input.jobs) {
    if (seen.has(key('job-failed', job.id))) continue; // a duplicate in the input: the first one decides
    seen.add(key('job-failed', job.id));
    const open = openOf('job-failed', job.id);
    const superseded = input.jobs.some(
      (j) => j.itemId !== null && j.itemId === job.itemId && j.kind === job.kind && j.state === 'succeeded' && j.createdAt > job.createdAt,
    );
    const current = job.state === 'failed' && !superseded;
    if (current && !open) {
      raise.push({ kind: 'job-failed', severity: 'critical', subjectId: job.id, message: `job ${job.kind} failed: ${job.error ?? 'no error recorded'}` });
    } else if (!current && open) clear.push({ id: open.id, reason: superseded ? 'a later job succeeded' : `job is ${job.state}` });
  }

  for (const k of input.keys) {
    if (seen.has(key('registration-key-expiring', k.id))) continue; // a duplicate in the input: the first one decides
    seen.add(key('registration-key-expiring', k.id));
    const open = openOf('registration-key-expiring', k.id);
    const soon = keyExpiringSoon(k, input.now, rules.keyExpiryWarningMs);
    if (soon && !open) {
      raise.push({ kind: 'registration-key-expiring', severity: 'warning', subjectId: k.id, message: `registration key ${k.id} expires at ${k.expiresAt}` });
    } else if (!soon && open) clear.push({ id: open.id, reason: k.revoked ? 'key revoked' : 'key expired or renewed' });
  }

  for (const ps of input.processServers ?? []) {
    if (seen.has(key('spool-filling', ps.id))) continue;
    seen.add(key('spool-filling', ps.id));
    const open = openOf('spool-filling', ps.id);
    const ratio = ps.spoolLimitBytes > 0 ? ps.spoolUsedBytes / ps.spoolLimitBytes : 0;
    const severity: AlertSeverity | null = ratio >= rules.spoolCriticalRatio ? 'critical' : ratio >= rules.spoolWarningRatio ? 'warning' : null;
    if (severity === null) {
      if (open) clear.push({ id: open.id, reason: `spool back to ${Math.round(ratio * 100)} %` });
    } else if (!open || open.severity !== severity) {
      // Raising again with another severity updates the open alert (one per kind and subject).
      raise.push({
        kind: 'spool-filling',
        severity,
        subjectId: ps.id,
        message: `the spool of process server ${ps.name} is ${Math.round(ratio * 100)} % full (${ps.spoolUsedBytes} of ${ps.spoolLimitBytes} bytes)`,
      });
    }
  }

  for (const gap of input.journalGaps ?? []) {
    if (seen.has(key('journal-gap', gap.subjectId))) continue;
    seen.add(key('journal-gap', gap.subjectId));
    if (!openOf('journal-gap', gap.subjectId)) raise.push({ kind: 'journal-gap', severity: 'critical', subjectId: gap.subjectId, message: gap.message });
  }

  for (const a of input.open) {
    if (!EVALUATED_KINDS.includes(a.kind)) continue;
    if (!seen.has(key(a.kind, a.subjectId)) && !clear.some((c) => c.id === a.id)) clear.push({ id: a.id, reason: 'subject no longer exists' });
  }
  return { raise, clear };
}
