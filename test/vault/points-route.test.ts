/**
 * GET /api/v1/items/:id/points on a vault whose item has two disks and points made
 * the way replication makes them (segments processed by the replica processor):
 * newest first over both disks, the limit, per disk the newest and the newest
 * app-consistent point, manifests read once across calls, an item without disks, an unknown item, and a vault whose
 * store cannot be opened.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ItemPoint, ItemPoints } from '../../src/core/model.js';
import { SEGMENT_APP_CONSISTENT } from '../../src/format/segment.js';
import { startRecoveryVault, type RecoveryVault } from './recovery/harness.js';

describe('GET /api/v1/items/:id/points', () => {
  let v: RecoveryVault;
  const t0 = Date.parse('2026-11-20T10:00:00Z');
  const minute = 60_000;

  before(async () => {
    v = await startRecoveryVault('points-route');
    await v.pointsAt(t0, 1);
    // An app-consistent cut on both disks, then two crash-consistent ones.
    for (const d of ['sda', 'sdb'] as const) await v.pendingCut(d, t0 + minute, 2, SEGMENT_APP_CONSISTENT);
    await v.server.replica.processNow(v.item.id);
    await v.pointsAt(t0 + 2 * minute, 3);
    await v.point('sda', t0 + 3 * minute, 4);
  });
  after(async () => v?.stop());

  const get = async (query = ''): Promise<ItemPoints> => {
    const res = await v.call('GET', `/api/v1/items/${v.item.id}/points${query}`);
    assert.equal(res.status, 200, res.text);
    return res.json as unknown as ItemPoints;
  };
  const disk = (name: string) => `${v.item.id}.${name}`;

  it('lists the points of both disks, newest capture first, with their disk, consistency, size and generation', async () => {
    const all = await get();
    assert.equal(all.items.length, 7);
    const times = all.items.map((p) => Date.parse(p.capturedAt));
    assert.deepEqual(times, [...times].sort((a, b) => b - a), 'newest first');
    assert.deepEqual(all.items[0], {
      pointId: all.items[0]?.pointId,
      disk: disk('sda'),
      capturedAt: new Date(t0 + 3 * minute).toISOString(),
      consistency: 'crash',
      sizeBytes: 64 * 1024,
      generation: 1,
    });
    assert.deepEqual(new Set(all.items.map((p) => p.disk)), new Set([disk('sda'), disk('sdb')]));
    const app = all.items.filter((p) => p.consistency === 'app');
    assert.deepEqual(app.map((p) => [p.disk, p.capturedAt]).sort(), [
      [disk('sda'), new Date(t0 + minute).toISOString()],
      [disk('sdb'), new Date(t0 + minute).toISOString()],
    ]);
    // The ids are the store's: each is the point of its disk the store holds.
    const stored = (await v.repo.listPoints(disk('sdb'))).map((m) => m.pointId).sort();
    assert.deepEqual(all.items.filter((p) => p.disk === disk('sdb')).map((p) => p.pointId).sort(), stored);
  });

  it('per disk, the newest point and the newest app-consistent point', async () => {
    const all = await get();
    const by = (list: readonly ItemPoint[]) => list.map((p) => [p.disk, p.capturedAt, p.consistency]);
    assert.deepEqual(by(all.latestProcessed), [
      [disk('sda'), new Date(t0 + 3 * minute).toISOString(), 'crash'],
      [disk('sdb'), new Date(t0 + 2 * minute).toISOString(), 'crash'],
    ]);
    assert.deepEqual(by(all.latestAppConsistent), [
      [disk('sda'), new Date(t0 + minute).toISOString(), 'app'],
      [disk('sdb'), new Date(t0 + minute).toISOString(), 'app'],
    ]);
  });

  it('limit keeps the newest N; out-of-range limits are VALIDATION', async () => {
    const all = await get();
    const two = await get('?limit=2');
    assert.deepEqual(two.items, all.items.slice(0, 2));
    assert.equal(two.latestProcessed.length, 2, 'the latest lists do not depend on the limit');
    for (const bad of ['0', '1001', 'x']) {
      const res = await v.call('GET', `/api/v1/items/${v.item.id}/points?limit=${bad}`);
      assert.equal(res.status, 400, `limit=${bad}: ${res.text}`);
      assert.equal(res.json.code, 'VALIDATION');
    }
  });

  it('asked again, reads only the manifests of new points, and leaves out a point pruned meanwhile', async () => {
    await get(); // every manifest of the item is known now
    const repo = await v.server.stores.openVaultStore(v.item.vaultId);
    const reads: string[] = [];
    const readPoint = repo.readPoint.bind(repo);
    repo.readPoint = (d, id) => {
      reads.push(id);
      return readPoint(d, id);
    };
    try {
      const before = await get();
      assert.deepEqual(reads, [], 'nothing new: no manifest read');
      const added = await v.point('sdb', t0 + 4 * minute, 5);
      const gone = before.items.find((p) => p.disk === disk('sda') && p.consistency === 'crash' && p.capturedAt === new Date(t0 + 2 * minute).toISOString());
      assert.ok(gone);
      const manifest = (await v.repo.listPoints(disk('sda'))).find((m) => m.pointId === gone.pointId);
      assert.ok(manifest);
      await v.repo.deletePoint(manifest);
      const after = await get();
      assert.deepEqual(reads, [added.pointId], 'only the new point was read');
      assert.equal(after.items[0]?.pointId, added.pointId);
      assert.ok(!after.items.some((p) => p.pointId === gone.pointId), 'the pruned point is gone');
      assert.equal(after.items.length, before.items.length);
    } finally {
      repo.readPoint = readPoint;
    }
  });

  it('an item without disks answers empty lists; an unknown item is 404', async () => {
    const repos = v.server.repos;
    const bare = await repos.items.create({
      vaultId: v.item.vaultId,
      machineId: (await repos.machines.create({ configServerId: (await repos.configServers.list())[0]?.id as string, name: 'bare', privateIp: '10.0.0.10', os: 'debian-12' })).id,
      policyId: v.item.policyId,
      state: 'enabling',
      compute: { targetName: 'bare', size: 'small', network: null, subnet: null, ip: null },
      disks: [],
    });
    const res = await v.call('GET', `/api/v1/items/${bare.id}/points`);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { items: [], latestProcessed: [], latestAppConsistent: [] });
    const missing = await v.call('GET', '/api/v1/items/01JAAAAAAAAAAAAAAAAAAAAAAA/points');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.code, 'NOT_FOUND');
  });

  it("an item whose vault's store cannot be opened answers that store's error, not a 500", async () => {
    const repos = v.server.repos;
    // A vault without a store passphrase: the store cannot be unlocked.
    const vault = await repos.vaults.create({ name: 'east', location: 'east', storeUrl: `file://${v.tmpDir}/no-store` });
    const policy = await repos.policies.create({ vaultId: vault.id, name: 'east-gold', rpoThresholdSeconds: 600, retentionHours: 24, appConsistentFrequencyMinutes: 60, crashConsistentFrequencySeconds: 30 });
    const cs = await repos.configServers.create({ vaultId: vault.id, name: 'cs-east', address: '10.0.1.1', version: '0.1.0' });
    const machine = await repos.machines.create({ configServerId: cs.id, name: 'db', privateIp: '10.0.1.9', os: 'debian-12' });
    const item = await repos.items.create({
      vaultId: vault.id,
      machineId: machine.id,
      policyId: policy.id,
      state: 'protected',
      compute: { targetName: 'db', size: 'small', network: null, subnet: null, ip: null },
      disks: [{ name: 'sda', sizeBytes: 4096 }],
    });
    const res = await v.call('GET', `/api/v1/items/${item.id}/points`);
    assert.ok(res.status >= 400 && res.status < 500, `${res.status} ${res.text}`);
    assert.equal(res.json.code, 'CONFIG_INVALID');
    assert.match(String(res.json.detail), /east has no store passphrase/);
  });
});
