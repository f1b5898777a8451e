/**
 * Replication's preconditions and alerts on a real vault: Enable protection stops at
 * "Identify the target" when the vault has no store passphrase (it could store
 * nothing), and the spool-filling alert follows the process server's spool.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AlertEvaluator } from '../../../src/vault/services/alert-evaluator.js';
import { makeTempDir } from '../../helpers/env.js';
import { client, start, waitFor } from '../replication/harness.js';

describe('replication preconditions and alerts', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  before(() => {
    tmp = makeTempDir('target');
  });
  after(() => tmp.cleanup());

  it('"Identify the target" fails, saying why, for a vault without a store passphrase', async () => {
    const server = await start(join(tmp.path, 'nopass'), { jobs: { pollIntervalMs: 20 }, replica: { enabled: false } });
    const admin = server.initialAdminToken!;
    const { call } = client(server.url);
    try {
      const vault = await call('POST', '/api/v1/vaults', admin, { name: 'bare', location: 'west', storeUrl: `file://${join(tmp.path, 'store')}` });
      assert.equal(vault.status, 201, vault.text);
      assert.equal(vault.json.storeRecoveryKey, undefined);
      const vaultId = String(vault.json.id);
      const cs = await server.repos.configServers.create({ vaultId, name: 'cs', address: '10.0.0.2', version: '0.1.0' });
      const policy = await call('POST', '/api/v1/policies', admin, { vaultId, name: 'gold' });
      const machine = await call('POST', '/api/v1/machines', admin, { configServerId: cs.id, name: 'web', privateIp: '10.0.0.3', os: 'debian-12', kernel: '6.1.0-13-amd64' });
      const account = await call('POST', '/api/v1/accounts', admin, { configServerId: cs.id, name: 'root', username: 'root', password: 'pw-123456' });
      const enabled = await call('POST', '/api/v1/replication/enable', admin, {
        vaultId,
        policyId: policy.json.id,
        configServerId: cs.id,
        accountId: account.json.id,
        machines: [machine.json.id],
      });
      assert.equal(enabled.status, 202, enabled.text);
      const jobId = String((enabled.json.jobs as { id: string }[])[0]!.id);
      const job = await waitFor('the job to fail', async () => {
        const j = await call('GET', `/api/v1/jobs/${jobId}`, admin);
        return j.json.state === 'failed' ? j.json : undefined;
      });
      const steps = job.steps as { name: string; state: string; error: string | null }[];
      assert.deepEqual(steps.map((s) => s.state), ['succeeded', 'failed', 'cancelled', 'cancelled', 'cancelled']);
      assert.match(String(steps[1]!.error), /vault bare has no store passphrase.*--passphrase-file/);
      // The store is not opened (there is nothing to open it with).
      await assert.rejects(server.stores.openVaultStore(vaultId), /no store passphrase/);
    } finally {
      await server.close();
    }
  });

  it('spool-filling: warning from 80 %, critical from 95 %, cleared below 80 %', async () => {
    const server = await start(join(tmp.path, 'spool'), { replica: { enabled: false }, alertIntervalMs: 3_600_000 });
    try {
      const vault = await server.repos.vaults.create({ name: 'v', location: 'west', storeUrl: `file://${join(tmp.path, 'store2')}` });
      const limit = 1000;
      const figures = (used: number) => ({
        bytesIn: used,
        segmentsIn: 1,
        segmentsUploaded: 0,
        spoolUsedBytes: used,
        spoolLimitBytes: limit,
        spooledSegments: 1,
        uploadLagMs: 0,
        connectedAgents: 1,
        uploadErrors: 0,
      });
      const alerts = new AlertEvaluator({ repos: server.repos, now: () => new Date() });
      const open = async () => server.repos.alerts.list({ open: true, kind: 'spool-filling' });
      await server.reportProcessServer(figures(500), '127.0.0.1:9443');
      await alerts.evaluateOnce();
      assert.equal((await open()).length, 0);
      await server.reportProcessServer(figures(850), '127.0.0.1:9443');
      await alerts.evaluateOnce();
      assert.deepEqual((await open()).map((a) => a.severity), ['warning']);
      assert.match((await open())[0]!.message, /85 % full/);
      await server.reportProcessServer(figures(960), '127.0.0.1:9443');
      await alerts.evaluateOnce();
      assert.deepEqual((await open()).map((a) => a.severity), ['critical']);
      await alerts.evaluateOnce(); // evaluating again changes nothing
      assert.equal((await server.repos.alerts.list({ kind: 'spool-filling' })).length, 1);
      const [row] = (await server.repos.processServers.list()).filter((p) => p.name === 'built-in');
      assert.equal(row?.health, 'critical');
      assert.equal((await server.repos.configServers.list({ vaultId: vault.id }))[0]?.name, 'lifeboat-server');
      await server.reportProcessServer(figures(100), '127.0.0.1:9443');
      await alerts.evaluateOnce();
      assert.equal((await open()).length, 0);
    } finally {
      await server.close();
    }
  });
});
