/**
 * The RPO sampler and GET /api/v1/items/:id/rpo-history on a vault that samples every
 * 20 ms: samples appear for items whose RPO is known (never for the others), the
 * `hours` window, samples older than 7 days are pruned, an unknown item is 404, and a
 * long history is thinned evenly to 2000 samples, first and last kept.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FakeComputeDriver } from '../../src/compute/fake.js';
import type { RpoHistory } from '../../src/core/model.js';
import { createVaultLogger } from '../../src/vault/logging/logger.js';
import { startVaultServer, type VaultServer } from '../../src/vault/server.js';
import { thinEvenly } from '../../src/vault/services/rpo-history.js';
import { makeTempDir } from '../helpers/env.js';
import { seedItem } from '../helpers/item.js';
import { waitFor } from './replication/harness.js';

describe('RPO history', () => {
  const tmp = makeTempDir('rpo-history');
  let server: VaultServer;
  let token: string;
  let measured: string;
  let unknownRpo: string;

  before(async () => {
    server = await startVaultServer({
      dataDir: join(tmp.path, 'vault'),
      host: '127.0.0.1',
      port: 0,
      rpoSampleIntervalMs: 20,
      replica: { enabled: false },
      alertIntervalMs: 3_600_000,
      compute: new FakeComputeDriver(),
      logger: createVaultLogger({ destination: { write: () => undefined } }),
    });
    token = server.initialAdminToken as string;
    const repos = server.repos;
    const vault = await repos.vaults.create({ name: 'west', location: 'west', storeUrl: `file://${tmp.path}/store` });
    const a = await seedItem(repos, vault.id, { name: 'web', state: 'protected' });
    measured = (await repos.items.update(a.item.id, { rpoSeconds: 42 })).id;
    const cs = (await repos.configServers.list())[0]?.id as string;
    const machine = await repos.machines.create({ configServerId: cs, name: 'db', privateIp: '10.0.0.10', os: 'debian-12' });
    unknownRpo = (
      await repos.items.create({
        vaultId: vault.id,
        machineId: machine.id,
        policyId: a.item.policyId,
        state: 'initial-replication',
        compute: { targetName: 'db', size: 'small', network: null, subnet: null, ip: null },
        disks: [],
      })
    ).id;
  });
  after(async () => {
    await server?.close();
    tmp.cleanup();
  });

  const history = async (itemId: string, query = ''): Promise<RpoHistory> => {
    const res = await fetch(`${server.url}/api/v1/items/${itemId}/rpo-history${query}`, { headers: { authorization: `Bearer ${token}` } });
    const body = (await res.json()) as RpoHistory;
    assert.equal(res.status, 200, JSON.stringify(body));
    return body;
  };

  it('samples every item whose RPO is known, with its policy threshold; none for an item without an RPO', async () => {
    const h = await waitFor('three samples', async () => {
      const got = await history(measured);
      return got.samples.length >= 3 ? got : undefined;
    });
    assert.equal(h.itemId, measured);
    assert.equal(h.thresholdSeconds, 60);
    assert.ok(h.samples.every((s) => s.rpoSeconds === 42));
    const times = h.samples.map((s) => Date.parse(s.at));
    assert.deepEqual(times, [...times].sort((x, y) => x - y), 'oldest first');
    assert.deepEqual((await history(unknownRpo)).samples, []);
  });

  it('hours chooses the window (default 24, 1..168); older samples are pruned after 7 days', async () => {
    const now = Date.now();
    const at = (hoursAgo: number) => new Date(now - hoursAgo * 3_600_000).toISOString();
    await server.repos.rpoSamples.append([
      { itemId: measured, at: at(8 * 24), rpoSeconds: 800 },
      { itemId: measured, at: at(30), rpoSeconds: 300 },
      { itemId: measured, at: at(3), rpoSeconds: 30 },
    ]);
    const values = (h: RpoHistory) => h.samples.map((s) => s.rpoSeconds).filter((r) => r !== 42);
    assert.deepEqual(values(await history(measured, '?hours=1')), []);
    assert.deepEqual(values(await history(measured)), [30]);
    assert.deepEqual(values(await history(measured, '?hours=48')), [300, 30]);
    // The sampler's next passes delete the 8-day-old one.
    await waitFor('the 8-day-old sample to be pruned', async () => ((await server.repos.rpoSamples.list(measured, at(9 * 24))).some((s) => s.rpoSeconds === 800) ? undefined : true));
    assert.deepEqual(values(await history(measured, '?hours=168')), [300, 30]);
    for (const bad of ['0', '169', 'day']) {
      const res = await fetch(`${server.url}/api/v1/items/${measured}/rpo-history?hours=${bad}`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 400, `hours=${bad}`);
      assert.equal(((await res.json()) as { code: string }).code, 'VALIDATION');
    }
  });

  it('an unknown item is 404 NOT_FOUND', async () => {
    const res = await fetch(`${server.url}/api/v1/items/01JAAAAAAAAAAAAAAAAAAAAAAA/rpo-history`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { code: string }).code, 'NOT_FOUND');
  });

  it('more than 2000 samples in the window are thinned evenly, the first and the last kept', async () => {
    const start = Date.now() - 3_600_000;
    const samples = Array.from({ length: 5000 }, (_, i) => ({ itemId: unknownRpo, at: new Date(start + i * 500).toISOString(), rpoSeconds: i }));
    await server.repos.rpoSamples.append(samples);
    const h = await history(unknownRpo, '?hours=2');
    assert.equal(h.samples.length, 2000);
    assert.equal(h.samples[0]?.rpoSeconds, 0);
    assert.equal(h.samples[1999]?.rpoSeconds, 4999);
    const gaps = h.samples.slice(1).map((s, i) => s.rpoSeconds - (h.samples[i]?.rpoSeconds as number));
    assert.ok(gaps.every((g) => g === 2 || g === 3), `even gaps: ${[...new Set(gaps)].join(',')}`);
    assert.deepEqual(thinEvenly([1, 2, 3], 2000), [1, 2, 3], 'short lists are kept whole');
  });
});
