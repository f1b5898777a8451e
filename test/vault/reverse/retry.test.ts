/**
 * A reprotect or failback whose job failed is run again by asking again (a new job, the
 * item's state and generation unchanged), never while one still runs; from any other
 * state the item-state table refuses as usual.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { startLiveVault } from '../api/harness.js';

test('reprotect and failback run again after a failed job, not beside a running one', async () => {
  const v = await startLiveVault('reverse-retry');
  try {
    const vault = await v.call('POST', '/api/v1/vaults', v.ownerToken, { name: 'rt', location: 'west', storeUrl: `file://${join(v.tmpDir, 'store')}`, storePassphrase: 'reverse-retry-Passphrase-44' });
    assert.equal(vault.status, 201, vault.text);
    const vaultId = String(vault.json.id);
    const repos = v.server.repos;
    const cs = await repos.configServers.create({ vaultId, name: 'cs', address: '10.0.0.1', version: '0.1.0' });
    const policy = await repos.policies.create({ vaultId, name: 'p', rpoThresholdSeconds: 60, retentionHours: 24, appConsistentFrequencyMinutes: 0, crashConsistentFrequencySeconds: 5 });
    const make = async (name: string, state: 'reprotecting' | 'failing-back' | 'protected') => {
      const machine = await repos.machines.create({ configServerId: cs.id, name, privateIp: '10.0.0.7', os: 'debian-12', supported: true });
      const item = await repos.items.create({
        vaultId,
        machineId: machine.id,
        policyId: policy.id,
        state,
        compute: { targetName: name, size: 'small', network: null, subnet: null, ip: null },
        disks: [{ name: 'sda', sizeBytes: 4096 }],
      });
      await repos.items.update(item.id, { generation: 3 });
      return item;
    };

    for (const [state, action] of [
      ['reprotecting', 'reprotect'],
      ['failing-back', 'failback'],
    ] as const) {
      const item = await make(`m-${action}`, state);
      // A job of the kind that has not ended: asking again is refused.
      const running = await repos.jobs.create({ kind: action, itemId: item.id, initiator: 'test', steps: ['x'] });
      await repos.jobs.update(running.id, { state: 'running' });
      const refused = await v.call('POST', `/api/v1/items/${item.id}/${action}`, v.ownerToken, {});
      assert.equal(refused.status, 409, refused.text);
      assert.equal(refused.json.code, 'ILLEGAL_TRANSITION');
      // It failed: asking again makes a new job, the item's state and generation unchanged.
      await repos.jobs.update(running.id, { state: 'failed', error: 'the agent was away' });
      const again = await v.call('POST', `/api/v1/items/${item.id}/${action}`, v.ownerToken, {});
      assert.equal(again.status, 202, again.text);
      assert.equal(again.json.kind, action);
      assert.notEqual(again.json.id, running.id);
      const after = await repos.items.get(item.id);
      assert.equal(after.state, state);
      assert.equal(after.generation, 3);
    }

    const protectedItem = await make('m-protected', 'protected');
    for (const action of ['reprotect', 'failback']) {
      const res = await v.call('POST', `/api/v1/items/${protectedItem.id}/${action}`, v.ownerToken, {});
      assert.equal(res.status, 409, res.text);
      assert.equal(res.json.code, 'ILLEGAL_TRANSITION');
    }
  } finally {
    await v.stop();
  }
});
