/**
 * The vault and the built-in process server together, as `lifeboat server` runs them:
 * an agent enrolls over the API, ships a cut over TLS with the certificate it was
 * issued, the process server spools and uploads it into the vault's store through the
 * vault's backend, and the replica processor makes the point that protects the item.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../../../src/format/segment.js';
import { startProcessServer } from '../../../src/process-server/server.js';
import { ReplicationClient } from '../../../src/protocol/client.js';
import { startLiveVault } from '../api/harness.js';

test('enroll, ship a cut to the process server, get a recovery point and a protected item', async () => {
  const v = await startLiveVault('e2e');
  const { call, ownerToken } = v;
  const vault = await call('POST', '/api/v1/vaults', ownerToken, { name: 'e2e', location: 'west', storeUrl: `file://${join(v.tmpDir, 'store')}`, storePassphrase: 'e2e-store-Passphrase-77' });
  assert.equal(vault.status, 201, vault.text);
  const vaultId = String(vault.json.id);
  const cs = await v.server.repos.configServers.create({ vaultId, name: 'cs-e2e', address: '10.0.0.1', version: '0.1.0' });
  const agent = await v.enrollAgent({ vaultId, serverId: cs.id }, [{ name: 'sda', sizeBytes: 1 << 20 }]);
  const enrolled = JSON.parse(agent.enrollResponse) as { caPem: string; config: { disks: { storeDisk: string }[]; generation: number } };
  const storeDisk = enrolled.config.disks[0]!.storeDisk;

  const ps = await startProcessServer({
    host: '127.0.0.1',
    port: 0,
    tls: await v.server.processServerTls(['127.0.0.1']),
    spoolDir: join(v.tmpDir, 'spool'),
    spoolLimitBytes: 64 << 20,
    backend: v.server.processServerBackend,
    workers: 1,
  });
  try {
    const client = await ReplicationClient.connect({
      host: '127.0.0.1',
      port: ps.port,
      tls: { certPem: agent.certificatePem, keyPem: agent.keyPem, caPem: enrolled.caPem },
      machineId: agent.machineId,
      disks: [{ disk: storeDisk, generation: enrolled.config.generation }],
    });
    const capturedAtMs = Date.now() - 3000;
    try {
      const base = { disk: storeDisk, generation: 1, diskSizeBytes: 1 << 20, capturedAtMs };
      await client.sendSegment({ ...base, sequence: 1, flags: SEGMENT_PARTIAL, extents: [{ offset: 0, data: Buffer.alloc(8192, 7) }] });
      await client.sendSegment({ ...base, sequence: 2, flags: SEGMENT_CONTINUES, extents: [{ offset: 65536, data: Buffer.alloc(4096, 9) }] });
    } finally {
      await client.close();
    }
    await ps.drained();
    assert.equal(ps.stats().segmentsUploaded, 2);

    const out = await v.server.replica.processNow(agent.itemId);
    assert.equal(out.disks[0]?.pointsMade, 1);
    assert.ok(out.rpoSeconds !== null && out.rpoSeconds >= 3 && out.rpoSeconds < 60, String(out.rpoSeconds));
    const item = await call('GET', `/api/v1/items/${agent.itemId}`, ownerToken);
    assert.equal(item.json.state, 'protected');
    const repo = await v.server.stores.openVaultStore(vaultId);
    const [point] = await repo.listPoints(storeDisk);
    assert.equal(point?.capturedAt, new Date(capturedAtMs).toISOString());

    // The process server's figures land on its row and in /metrics.
    await v.server.reportProcessServer(ps.stats(), `127.0.0.1:${ps.port}`);
    const servers = await call('GET', '/api/v1/process-servers', ownerToken);
    const builtIn = (servers.json.items as { name: string; spoolLimitBytes: number; health: string }[]).filter((p) => p.name === 'built-in' && p.spoolLimitBytes === 64 << 20);
    assert.ok(builtIn.length >= 1, servers.text);
    assert.equal(builtIn[0]?.health, 'healthy');
    const metrics = await call('GET', '/metrics', ownerToken);
    assert.match(metrics.text, /^lifeboat_process_server_segments_uploaded_total 2$/m);
  } finally {
    await ps.close();
    await v.stop();
  }
});
