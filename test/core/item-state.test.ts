import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isLifeboatError } from '../../src/core/errors.js';
import type { ItemState, JobKind } from '../../src/core/model.js';
import {
  ITEM_ACTIONS,
  ITEM_STATES,
  enableItem,
  setInitialReplicationProgress,
  transition,
  type ItemAction,
  type ItemStatus,
} from '../../src/core/item-state.js';

/** Written out by hand, independent of the module's table: a change to one must be a change to both. */
const EXPECTED: Record<string, [ItemState, JobKind[]]> = {
  'enabling/start-initial-replication': ['initial-replication', []],
  'enabling/disable': ['disabled', []],
  'initial-replication/finish-initial-replication': ['protected', ['finalize-protection']],
  'initial-replication/disable': ['disabled', []],
  'protected/start-test-failover': ['test-failover', ['test-failover']],
  'protected/start-failover': ['failing-over', ['failover']],
  'protected/disable': ['disabled', []],
  'test-failover/cleanup-test-failover': ['test-failover-cleanup', ['cleanup-test-failover']],
  'test-failover/start-failover': ['failing-over', ['cleanup-test-failover', 'failover']],
  'test-failover-cleanup/finish-test-failover-cleanup': ['protected', []],
  'failing-over/retry-failover': ['failing-over', ['failover']],
  'failing-over/finish-failover': ['failed-over', []],
  'failed-over/change-recovery-point': ['failed-over', ['change-recovery-point']],
  'failed-over/commit': ['committed', ['commit']],
  'failed-over/disable': ['disabled', []],
  'committed/start-reprotect': ['reprotecting', ['reprotect']],
  'committed/disable': ['disabled', []],
  'reprotecting/finish-reprotect': ['reprotected', []],
  'reprotected/start-failback': ['failing-back', ['failback']],
  'reprotected/disable': ['disabled', []],
  'failing-back/finish-failback': ['initial-replication', []],
};
const FENCING = new Set(['protected/start-failover', 'test-failover/start-failover', 'reprotected/start-failback']);

const at = (state: ItemState, generation = 3, initialReplicationPercent = 40): ItemStatus => ({ state, generation, initialReplicationPercent });

test('every state x action: allowed pairs go where the table says, every other is refused naming the state', () => {
  let allowed = 0;
  let refused = 0;
  for (const state of ITEM_STATES) {
    for (const action of ITEM_ACTIONS) {
      const key = `${state}/${action}`;
      const expected = EXPECTED[key];
      if (expected) {
        const r = transition(at(state), action);
        assert.equal(r.state, expected[0], key);
        assert.deepEqual(r.jobs, expected[1], key);
        assert.equal(r.generation, FENCING.has(key) ? 4 : 3, `${key} generation`);
        allowed++;
      } else {
        assert.throws(
          () => transition(at(state), action),
          (e: unknown) =>
            isLifeboatError(e, 'ILLEGAL_TRANSITION') && e.message.includes(`'${state}'`) && e.message.includes(action) && e.details.state === state,
          key,
        );
        refused++;
      }
    }
  }
  assert.equal(allowed, Object.keys(EXPECTED).length);
  assert.equal(allowed + refused, ITEM_STATES.length * ITEM_ACTIONS.length);
});

test('a running failover cannot be cancelled, and the refusal says why', () => {
  assert.throws(
    () => transition(at('failing-over'), 'cancel-failover'),
    (e: unknown) => isLifeboatError(e, 'ILLEGAL_TRANSITION') && /never cancelled half-way/.test(e.message),
  );
  assert.throws(() => transition(at('failing-over'), 'disable'), (e: unknown) => isLifeboatError(e, 'ILLEGAL_TRANSITION'));
});

test('the refusal lists what the state allows', () => {
  try {
    transition(at('committed'), 'change-recovery-point');
    assert.fail('should refuse');
  } catch (e) {
    assert.ok(isLifeboatError(e, 'ILLEGAL_TRANSITION'));
    assert.deepEqual(e.details.allowed, ['start-reprotect', 'disable']);
    assert.match(e.message, /only after a failover and before commit/);
  }
});

test('enable starts "Enable protection"; initial replication progress is monotonic and restarts at 0 after failback', () => {
  const e = enableItem();
  assert.deepEqual(e, { state: 'enabling', generation: 1, initialReplicationPercent: 0, jobs: ['enable-protection'] });
  let s: ItemStatus = transition(e, 'start-initial-replication');
  s = setInitialReplicationProgress(s, 30);
  s = setInitialReplicationProgress(s, 20);
  assert.equal(s.initialReplicationPercent, 30);
  assert.throws(() => setInitialReplicationProgress(s, 101), (x: unknown) => isLifeboatError(x, 'VALIDATION'));
  assert.throws(() => setInitialReplicationProgress(s, Number.NaN), (x: unknown) => isLifeboatError(x, 'VALIDATION'));
  s = transition(s, 'finish-initial-replication');
  assert.equal(s.initialReplicationPercent, 100);
  assert.throws(() => setInitialReplicationProgress(s, 50), (x: unknown) => isLifeboatError(x, 'ILLEGAL_TRANSITION'));
  for (const a of ['start-failover', 'finish-failover', 'commit', 'start-reprotect', 'finish-reprotect', 'start-failback', 'finish-failback'] as const) {
    s = transition(s, a);
  }
  assert.equal(s.state, 'initial-replication');
  assert.equal(s.initialReplicationPercent, 0);
  assert.equal(s.generation, 3, 'failover and failback each fence the old writer');
});

test('random action sequences stay in known states, generation never decreases, disabled is final', () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...ITEM_ACTIONS), { maxLength: 60 }), (actions: ItemAction[]) => {
      let s: ItemStatus = enableItem();
      for (const a of actions) {
        let next: ItemStatus;
        try {
          next = transition(s, a);
        } catch (e) {
          assert.ok(isLifeboatError(e, 'ILLEGAL_TRANSITION'), String(e));
          continue;
        }
        assert.ok(ITEM_STATES.includes(next.state), next.state);
        assert.ok(next.generation === s.generation || next.generation === s.generation + 1);
        assert.ok(next.initialReplicationPercent >= 0 && next.initialReplicationPercent <= 100);
        assert.notEqual(s.state, 'disabled', 'nothing leaves disabled');
        s = next;
      }
    }),
    { numRuns: 2000 },
  );
});
