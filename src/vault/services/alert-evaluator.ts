import { DEFAULT_ALERT_RULES, evaluateAlerts, type AlertDecision, type AlertRules } from '../../core/alerts.js';
import type { ItemState } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';
import { Periodic } from './periodic.js';

/** Items whose agent must be heartbeating. */
const AGENT_HEARTBEAT_STATES: readonly ItemState[] = ['initial-replication', 'protected', 'test-failover', 'test-failover-cleanup'];

/**
 * Applies the alert rules of src/core/alerts.ts to what the vault database knows
 * now: items with their policy's RPO threshold, configuration servers' and
 * replicating agents' heartbeats, process servers' spools, journal gaps, jobs,
 * registration keys. Raising and clearing go through
 * repos.alerts (one open alert per kind and subject), so evaluating twice changes
 * nothing. The clock is injected; the loop runs every `intervalMs`.
 */
export class AlertEvaluator {
  private readonly loop: Periodic;

  constructor(
    private readonly options: {
      readonly repos: Repositories;
      readonly now: () => Date;
      readonly rules?: AlertRules;
      /** Default 30 s. */
      readonly intervalMs?: number;
      /** Items whose journal has a gap (the replica processor's journalGaps()). */
      readonly journalGaps?: () => readonly { subjectId: string; message: string }[];
      readonly onError?: (err: unknown) => void;
    },
  ) {
    this.loop = new Periodic(() => this.evaluateOnce(), options.intervalMs ?? 30_000, options.onError);
  }

  async evaluateOnce(): Promise<AlertDecision> {
    const { repos, now } = this.options;
    const at = now();
    const policies = new Map((await repos.policies.list()).map((p) => [p.id, p]));
    const items = (await repos.items.list()).flatMap((i) => {
      const p = policies.get(i.policyId);
      return p ? [{ id: i.id, state: i.state, rpoSeconds: i.rpoSeconds, rpoThresholdSeconds: p.rpoThresholdSeconds }] : [];
    });
    const configServers = (await repos.configServers.list()).map((s) => ({
      id: s.id,
      name: s.name,
      lastHeartbeatAt: s.lastHeartbeatAt,
      registeredAt: s.registeredAt,
    }));
    // Agents of items that replicate forward heartbeat every 5 s: a silent one is lost like a silent server.
    const replicating = new Set((await repos.items.list()).filter((i) => AGENT_HEARTBEAT_STATES.includes(i.state)).map((i) => i.id));
    const agents = (await repos.agents.list())
      .filter((a) => replicating.has(a.itemId))
      .map((a) => ({ id: a.id, name: `the agent of ${a.hostname} (item ${a.itemId})`, lastHeartbeatAt: a.lastHeartbeatAt, registeredAt: a.enrolledAt }));
    const jobs = await repos.jobs.list();
    const keys = await repos.registrationKeys.list();
    const open = await repos.alerts.list({ open: true });
    const processServers = await repos.processServers.list();
    const journalGaps = this.options.journalGaps?.() ?? [];
    const decision = evaluateAlerts({ now: at, items, servers: [...configServers, ...agents], jobs, keys, open, processServers, journalGaps }, this.options.rules ?? DEFAULT_ALERT_RULES);
    const byId = new Map(open.map((a) => [a.id, a]));
    await repos.db.transaction(async () => {
      for (const c of decision.clear) {
        const a = byId.get(c.id);
        if (a) await repos.alerts.clear(a.kind, a.subjectId);
      }
      for (const r of decision.raise) await repos.alerts.raise(r);
    });
    return decision;
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}
