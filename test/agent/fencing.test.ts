/**
 * Fencing at the agent service (docs/recovery.md, "Fencing"), with the real parts: the
 * vault (API, CA, agent service), a process server whose backend is the vault, and the
 * real agent (enrolled with a one-time token, scan tracker over an image file, TLS).
 * Once the item fails over, the vault answers the agent `mode: fenced`: it stops
 * shipping, keeps no session open and says so in its heartbeat; a HELLO of the item is
 * refused with GENERATION_FENCED whatever generation it names.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent, type AgentEvent } from '../../src/agent/agent.js';
import { parseAgentFileConfig } from '../../src/agent/config.js';
import { enroll } from '../../src/agent/enroll.js';
import { replicationTransport } from '../../src/agent/replication-transport.js';
import { StateDir } from '../../src/agent/state.js';
import { registryTrackers } from '../../src/agent/trackers.js';
import { HttpVaultClient } from '../../src/agent/vault-client.js';
import { isLifeboatError } from '../../src/core/errors.js';
import { startProcessServer } from '../../src/process-server/server.js';
import { startLiveVault } from '../vault/api/harness.js';
import { waitFor } from '../vault/replication/harness.js';
import { seedItem } from '../helpers/item.js';

const MiB = 2 ** 20;

function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

test('a failed-over item: its agent is told mode fenced and stops shipping; a HELLO of the item is refused with GENERATION_FENCED', async () => {
  const v = await startLiveVault('agent-fencing');
  const { call, ownerToken } = v;
  const image = join(v.tmpDir, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, 4 * MiB);
  writeAt(image, 0, randomBytes(MiB));

  const vault = await call('POST', '/api/v1/vaults', ownerToken, { name: 'fence', location: 'west', storeUrl: `file://${join(v.tmpDir, 'store')}`, storePassphrase: 'agent-fencing-Passphrase-77' });
  assert.equal(vault.status, 201, vault.text);
  const vaultId = String(vault.json.id);
  const repos = v.server.repos;
  const { item } = await seedItem(repos, vaultId);

  const ps = await startProcessServer({
    host: '127.0.0.1',
    port: 0,
    tls: await v.server.processServerTls(['127.0.0.1', 'localhost']),
    spoolDir: join(v.tmpDir, 'spool'),
    spoolLimitBytes: 64 * MiB,
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
    await enroll({ vaultUrl: v.server.url, itemId: item.id, token, config, stateDir, vault: new HttpVaultClient(v.server.url) });
    const identity = new StateDir(stateDir).identity();
    const events: AgentEvent[] = [];
    const agent = new Agent({
      stateDir,
      config,
      vault: new HttpVaultClient(identity.vaultUrl),
      connect: replicationTransport(identity),
      openTracker: registryTrackers(new StateDir(stateDir)),
      heartbeatIntervalMs: 100,
      version: '0.1.0',
      onEvent: (e) => events.push(e),
    });
    running = agent.run(stop.signal);
    const committed = () => events.filter((e) => e.event === 'cut-committed').length;
    await waitFor('the initial cut', async () => (committed() >= 1 ? true : undefined), 60_000);
    assert.equal(agent.report().mode, 'replicate');
    assert.equal(agent.currentConfig.mode, 'replicate');

    // Failover: the item leaves the replicating states and its generation is raised.
    assert.ok(await repos.items.updateState(item.id, 'initial-replication', 'failed-over', { generation: 2 }));
    await waitFor('the agent to obey mode fenced', async () => (agent.report().mode === 'fenced' ? true : undefined), 20_000);
    assert.equal(agent.currentConfig.mode, 'fenced');
    assert.equal(agent.status().connected, false, 'no session stays open');
    await waitFor('the vault to hear the fenced mode', async () => (v.server.agents.report(item.id)?.mode === 'fenced' ? true : undefined), 20_000);
    // The agent kept its numbering at generation 1: a new generation does not unfence it by itself.
    assert.equal(agent.status().disks[0]?.generation, 1);

    const before = committed();
    const connects = events.filter((e) => e.event === 'connected').length;
    writeAt(image, 2 * MiB, randomBytes(64 * 1024));
    // Several crash-consistent intervals: a replicating agent would have cut and shipped the write by now.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(committed(), before, 'no cut is shipped while fenced');
    assert.equal(events.filter((e) => e.event === 'connected').length, connects, 'no new session is opened while fenced');

    // The process server refuses a HELLO of the item, at the old generation and at the new one.
    for (const generation of [1, 2]) {
      await assert.rejects(
        replicationTransport(identity)({ processServer: { host: '127.0.0.1', port: ps.port, serverName: 'localhost' }, machineId: identity.machineId, disks: [{ disk: `${item.id}.sda`, generation }] }),
        (err: unknown) => isLifeboatError(err, 'GENERATION_FENCED'),
        `generation ${generation} is fenced`,
      );
    }
    await assert.rejects(v.server.processServerBackend.authorize({ machineId: identity.machineId, certificateSerial: (await repos.agents.findByItem(item.id))?.certificateSerial ?? '' }), (err: unknown) =>
      isLifeboatError(err, 'GENERATION_FENCED'),
    );
  } finally {
    stop.abort();
    await running?.catch(() => undefined);
    await ps.close();
    await v.stop();
  }
});
