/**
 * The whole replication path with the real parts: the vault (API, CA, stores, replica
 * processor), the built-in process server with the vault as its backend, and the real
 * agent (enrollment over the API with a one-time token, heartbeats, the scan tracker
 * over an image file, TLS with the certificate the vault issued). The item goes from
 * initial replication to protected, its newest point equals the image, and its RPO is
 * measured from the cut's capture time.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent, type AgentEvent } from '../../../src/agent/agent.js';
import { parseAgentFileConfig } from '../../../src/agent/config.js';
import { enroll } from '../../../src/agent/enroll.js';
import { replicationTransport } from '../../../src/agent/replication-transport.js';
import { StateDir } from '../../../src/agent/state.js';
import { registryTrackers } from '../../../src/agent/trackers.js';
import { HttpVaultClient } from '../../../src/agent/vault-client.js';
import { startProcessServer } from '../../../src/process-server/server.js';
import { PointReader } from '../../../src/store/point-reader.js';
import { startLiveVault } from '../api/harness.js';
import { waitFor } from '../replication/harness.js';
import { seedItem } from '../../helpers/item.js';

const MiB = 2 ** 20;

test('agent -> process server -> store -> replica processor: a protected item whose point equals the disk', async () => {
  const v = await startLiveVault('agent-e2e');
  const { call, ownerToken } = v;
  const image = join(v.tmpDir, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, 8 * MiB);
  const fd = openSync(image, 'r+');
  writeSync(fd, randomBytes(3 * MiB), 0, 3 * MiB, MiB);
  closeSync(fd);

  const vault = await call('POST', '/api/v1/vaults', ownerToken, { name: 'e2e', location: 'west', storeUrl: `file://${join(v.tmpDir, 'store')}`, storePassphrase: 'agent-e2e-Passphrase-31' });
  assert.equal(vault.status, 201, vault.text);
  const vaultId = String(vault.json.id);
  const repos = v.server.repos;
  const { item, machineId } = await seedItem(repos, vaultId);

  const ps = await startProcessServer({
    host: '127.0.0.1',
    port: 0,
    tls: await v.server.processServerTls(['127.0.0.1', 'localhost']),
    spoolDir: join(v.tmpDir, 'spool'),
    spoolLimitBytes: 256 * MiB,
    backend: v.server.processServerBackend,
    workers: 1,
  });
  v.server.setProcessServerEndpoint({ host: '127.0.0.1', port: ps.port, serverName: 'localhost' });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  try {
    const token = String((await call('POST', `/api/v1/items/${item.id}/enrollment-token`, ownerToken, {})).json.token);
    const config = parseAgentFileConfig({ disks: [{ name: 'sda', tracker: { kind: 'scan', path: image } }] });
    const stateDir = join(v.tmpDir, 'agent');
    const enrolled = await enroll({ vaultUrl: v.server.url, itemId: item.id, token, config, stateDir, vault: new HttpVaultClient(v.server.url) });
    assert.equal(enrolled.machineId, machineId);
    const state = new StateDir(stateDir);
    const identity = state.identity();
    const events: AgentEvent[] = [];
    const agent = new Agent({
      stateDir,
      config,
      vault: new HttpVaultClient(identity.vaultUrl),
      connect: replicationTransport(identity),
      openTracker: registryTrackers(state),
      heartbeatIntervalMs: 200,
      version: '0.1.0',
      onEvent: (e) => events.push(e),
    });
    running = agent.run(stop.signal);
    await waitFor('the initial cut', async () => (events.some((e) => e.event === 'cut-committed') ? true : undefined), 60_000);
    await ps.drained();
    const out = await v.server.replica.processNow(item.id);
    assert.equal(out.protectedNow, true, JSON.stringify(out));
    assert.ok(out.rpoSeconds !== null && out.rpoSeconds < 60);
    const agentRow = await waitFor('a heartbeat', async () => {
      const a = (await call('GET', `/api/v1/items/${item.id}/agent`, ownerToken)).json;
      return a.lastHeartbeatAt ? a : undefined;
    });
    assert.equal((agentRow.disks as { name: string }[])[0]?.name, 'sda');
    const repo = await v.server.stores.openVaultStore(vaultId);
    const point = await repo.latestPoint(`${item.id}.sda`);
    assert.ok(point);
    const reader = await PointReader.open(repo, point, { workers: 0 });
    try {
      assert.ok((await reader.read(0, 8 * MiB)).equals(readFileSync(image)), 'the newest point equals the image');
    } finally {
      await reader.close();
    }
    assert.equal((await call('GET', `/api/v1/items/${item.id}`, ownerToken)).json.state, 'protected');
  } finally {
    stop.abort();
    await running?.catch(() => undefined);
    await ps.close();
    await v.stop();
  }
});
