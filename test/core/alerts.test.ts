import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { evaluateAlerts, type AlertDecision, type AlertInput } from '../../src/core/alerts.js';
import type { ItemState } from '../../src/core/model.js';

const NOW = new Date('2026-11-01T12:00:00Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();
const empty: AlertInput = { now: NOW, items: [], servers: [], jobs: [], keys: [], open: [] };
const item = (rpoSeconds: number | null, state: ItemState = 'protected') => ({ id: 'I1', state, rpoSeconds, rpoThresholdSeconds: 900 });
type Open = AlertInput['open'][number];

/** Applies a decision to the open set, as the vault would. */
function apply(open: readonly Open[], d: AlertDecision, n: { i: number }): Open[] {
  const cleared = new Set(d.clear.map((c) => c.id));
  return [...open.filter((a) => !cleared.has(a.id)), ...d.raise.map((r) => ({ id: `A${n.i++}`, kind: r.kind, severity: r.severity, subjectId: r.subjectId }))];
}

test('RPO: warning above the threshold, critical above twice it, cleared only at 80% (hysteresis)', () => {
  assert.deepEqual(evaluateAlerts({ ...empty, items: [item(900)] }), { raise: [], clear: [] }, 'at the threshold: fine');
  const w = evaluateAlerts({ ...empty, items: [item(901)] });
  assert.deepEqual(w.raise.map((r) => [r.kind, r.severity, r.subjectId]), [['rpo-threshold-exceeded', 'warning', 'I1']]);
  assert.match(w.raise[0]!.message, /RPO 901 s exceeds the policy threshold of 900 s/);
  const open: Open[] = [{ id: 'A1', kind: 'rpo-threshold-exceeded', severity: 'warning', subjectId: 'I1' }];
  assert.deepEqual(evaluateAlerts({ ...empty, items: [item(800)], open }), { raise: [], clear: [] }, 'below threshold but above 80%: stays open');
  assert.deepEqual(evaluateAlerts({ ...empty, items: [item(720)], open }).clear, [{ id: 'A1', reason: 'RPO back to 720 s' }]);
  assert.deepEqual(evaluateAlerts({ ...empty, items: [item(null)], open }), { raise: [], clear: [] }, 'unknown RPO changes nothing');
  const esc = evaluateAlerts({ ...empty, items: [item(1801)], open });
  assert.deepEqual(esc.clear.map((c) => c.id), ['A1']);
  assert.deepEqual(esc.raise.map((r) => r.severity), ['critical']);
  const crit: Open[] = [{ id: 'A2', kind: 'rpo-threshold-exceeded', severity: 'critical', subjectId: 'I1' }];
  assert.deepEqual(evaluateAlerts({ ...empty, items: [item(1000)], open: crit }), { raise: [], clear: [] }, 'never downgraded');
  assert.deepEqual(evaluateAlerts({ ...empty, items: [item(5000, 'failed-over')], open: crit }).clear.map((c) => c.id), ['A2'], 'no longer replicating');
  assert.deepEqual(evaluateAlerts({ ...empty, items: [item(5000, 'initial-replication')] }).raise, [], 'no RPO alert during initial replication');
});

test('heartbeat lost after 5 minutes, cleared by a fresh heartbeat; a server that never sent one counts from registration', () => {
  const server = (last: string | null) => ({ id: 'S1', name: 'cs1', lastHeartbeatAt: last, registeredAt: ago(3600_000) });
  assert.deepEqual(evaluateAlerts({ ...empty, servers: [server(ago(300_000))] }).raise, []);
  const lost = evaluateAlerts({ ...empty, servers: [server(ago(300_001))] });
  assert.deepEqual(lost.raise.map((r) => [r.kind, r.severity]), [['heartbeat-lost', 'critical']]);
  assert.match(lost.raise[0]!.message, /no heartbeat from cs1 since/);
  assert.equal(evaluateAlerts({ ...empty, servers: [server(null)] }).raise.length, 1);
  const open: Open[] = [{ id: 'A1', kind: 'heartbeat-lost', severity: 'critical', subjectId: 'S1' }];
  assert.deepEqual(evaluateAlerts({ ...empty, servers: [server(ago(1000))], open }).clear.map((c) => c.id), ['A1']);
});

test('a failed job raises until a later job of the same kind on the item succeeds', () => {
  const failed = { id: 'J1', kind: 'failover' as const, itemId: 'I1', state: 'failed' as const, createdAt: ago(10_000), error: 'no compute' };
  const r = evaluateAlerts({ ...empty, jobs: [failed] });
  assert.deepEqual(r.raise.map((a) => [a.kind, a.subjectId]), [['job-failed', 'J1']]);
  assert.match(r.raise[0]!.message, /failover failed: no compute/);
  const open: Open[] = [{ id: 'A1', kind: 'job-failed', severity: 'critical', subjectId: 'J1' }];
  assert.deepEqual(evaluateAlerts({ ...empty, jobs: [failed], open }), { raise: [], clear: [] });
  const retry = { ...failed, id: 'J2', state: 'succeeded' as const, createdAt: ago(5000), error: null };
  assert.deepEqual(evaluateAlerts({ ...empty, jobs: [failed, retry], open }).clear, [{ id: 'A1', reason: 'a later job succeeded' }]);
  const other = { ...retry, kind: 'commit' as const };
  assert.deepEqual(evaluateAlerts({ ...empty, jobs: [failed, other], open }).clear, [], 'another kind does not clear it');
});

test('registration key expiring within a day raises a warning, cleared once revoked or expired', () => {
  const k = (expiresInMs: number, revoked = false) => ({ id: 'K1', expiresAt: ago(-expiresInMs), revoked });
  assert.deepEqual(evaluateAlerts({ ...empty, keys: [k(24 * 3600_000 + 1)] }).raise, []);
  assert.deepEqual(evaluateAlerts({ ...empty, keys: [k(3600_000)] }).raise.map((a) => [a.kind, a.severity]), [['registration-key-expiring', 'warning']]);
  const open: Open[] = [{ id: 'A1', kind: 'registration-key-expiring', severity: 'warning', subjectId: 'K1' }];
  assert.deepEqual(evaluateAlerts({ ...empty, keys: [k(3600_000, true)], open }).clear, [{ id: 'A1', reason: 'key revoked' }]);
  assert.equal(evaluateAlerts({ ...empty, keys: [k(-1)], open }).clear.length, 1);
});

test('alerts whose subject is gone are cleared', () => {
  const open: Open[] = [{ id: 'A9', kind: 'heartbeat-lost', severity: 'critical', subjectId: 'S-gone' }];
  assert.deepEqual(evaluateAlerts({ ...empty, open }).clear, [{ id: 'A9', reason: 'subject no longer exists' }]);
});

test('a drill-failed alert is the drill scheduler\'s: the rules neither raise nor clear it', () => {
  const open: Open[] = [{ id: 'A7', kind: 'drill-failed', severity: 'critical', subjectId: 'I1' }];
  const decision = evaluateAlerts({ ...empty, open });
  assert.deepEqual(decision.clear, []);
  assert.deepEqual(decision.raise, []);
});

test('applying a decision reaches a fixpoint: evaluating again raises and clears nothing, one alert per kind and subject', () => {
  const states: ItemState[] = ['protected', 'initial-replication', 'failed-over', 'reprotected', 'test-failover'];
  const world = fc.record({
    items: fc.uniqueArray(fc.record({ id: fc.constantFrom('I1', 'I2', 'I3'), state: fc.constantFrom(...states), rpoSeconds: fc.option(fc.integer({ min: 0, max: 4000 })), rpoThresholdSeconds: fc.constant(900) }), { maxLength: 3, selector: (i) => i.id }),
    servers: fc.uniqueArray(fc.record({ id: fc.constantFrom('S1', 'S2'), name: fc.constant('cs'), lastHeartbeatAt: fc.option(fc.integer({ min: 0, max: 900_000 }).map(ago)), registeredAt: fc.constant(ago(1e6)) }), { maxLength: 2, selector: (s) => s.id }),
    jobs: fc.uniqueArray(fc.record({ id: fc.constantFrom('J1', 'J2', 'J3', 'J4'), kind: fc.constantFrom('failover' as const, 'commit' as const), itemId: fc.constantFrom('I1', 'I2', null), state: fc.constantFrom('failed' as const, 'succeeded' as const, 'running' as const), createdAt: fc.integer({ min: 0, max: 100 }).map(ago), error: fc.constant(null) }), { maxLength: 4, selector: (j) => j.id }),
    keys: fc.uniqueArray(fc.record({ id: fc.constantFrom('K1', 'K2'), expiresAt: fc.integer({ min: -2 * 86400_000, max: 3 * 86400_000 }).map(ago), revoked: fc.boolean() }), { maxLength: 2, selector: (k) => k.id }),
  });
  fc.assert(
    fc.property(fc.array(world, { minLength: 1, maxLength: 6 }), (worlds) => {
      let open: Open[] = [];
      // Duplicated subjects in the input must not raise twice.
      worlds = worlds.map((w, i) => (i % 2 === 1 ? { ...w, items: [...w.items, ...w.items], jobs: [...w.jobs, ...w.jobs] } : w));
      const n = { i: 1 };
      for (const w of worlds) {
        open = apply(open, evaluateAlerts({ ...w, now: NOW, open }), n);
        const again = evaluateAlerts({ ...w, now: NOW, open });
        assert.deepEqual(again, { raise: [], clear: [] });
        const keys = open.map((a) => `${a.kind}/${a.subjectId}`);
        assert.equal(new Set(keys).size, keys.length, 'one open alert per kind and subject');
      }
    }),
    { numRuns: 1000 },
  );
});
