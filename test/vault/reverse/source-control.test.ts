/**
 * Shutting down and starting the source machine (src/vault/reverse/source-control.ts)
 * when neither its agent nor SSH can do it: the error says why for each way tried, and
 * a request the agent never answers is withdrawn. (The agent path runs in
 * reprotect-failback.test.ts: failover with --shutdown-source, failback's start.)
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { isLifeboatError } from '../../../src/core/errors.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import type { RecoveryDeps } from '../../../src/vault/recovery/module.js';
import { shutDownSource, startSource } from '../../../src/vault/reverse/source-control.js';
import { startLiveVault } from '../api/harness.js';
import { seedItem } from '../../helpers/item.js';

test('without an agent or a push account, shutting the source down and starting it fail saying why; the agent request is not left behind', async () => {
  const v = await startLiveVault('source-control');
  try {
    const vault = await v.call('POST', '/api/v1/vaults', v.ownerToken, { name: 'sc', location: 'west', storeUrl: `file://${join(v.tmpDir, 'store')}`, storePassphrase: 'source-control-Passphrase-12' });
    assert.equal(vault.status, 201, vault.text);
    const vaultId = String(vault.json.id);
    const repos = v.server.repos;
    const { item } = await seedItem(repos, vaultId, { name: 'db', state: 'failing-over', disks: [{ name: 'sda', sizeBytes: 4096 }], crashConsistentFrequencySeconds: 5, generation: 0 });
    const deps: RecoveryDeps = {
      repos,
      stores: v.server.stores,
      replica: v.server.replica,
      agents: v.server.agents,
      compute: v.server.compute,
      now: () => new Date(),
      logger: createVaultLogger({ level: 'silent' }),
      dataDir: v.dataDir,
    };
    await assert.rejects(shutDownSource(deps, item, new AbortController().signal), (err: unknown) => {
      assert.ok(isLifeboatError(err, 'COMPUTE_FAILED'), String(err));
      assert.match((err as Error).message, /no agent has enrolled/);
      assert.match((err as Error).message, /no push account/);
      return true;
    });
    await assert.rejects(startSource(deps, item, new AbortController().signal), (err: unknown) => {
      assert.ok(isLifeboatError(err, 'COMPUTE_FAILED'), String(err));
      assert.match((err as Error).message, /start it yourself/);
      return true;
    });
    assert.equal((await v.server.agents.requests(item.id)).shutdownRequest ?? null, null, 'no request was made of an agent that does not exist');
  } finally {
    await v.stop();
  }
});
