/**
 * The agent's vault client against the real assembled vault: enrollment with the
 * agent's own key and CSR, heartbeats with its credential, pause and throttle
 * reaching the agent through the heartbeat answer.
 */
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent } from '../../src/agent/agent.js';
import { parseAgentFileConfig } from '../../src/agent/config.js';
import { enroll } from '../../src/agent/enroll.js';
import { StateDir } from '../../src/agent/state.js';
import { HttpVaultClient } from '../../src/agent/vault-client.js';
import { FakeDisk } from '../../src/changetracking/fake/fake-tracker.js';
import { startLiveVault, type LiveVault } from '../vault/api/harness.js';
import { FakeProcessServer } from './fakes.js';

describe('agent against the real vault', () => {
  let v: LiveVault;
  let server: { vaultId: string; serverId: string; credential: string };
  before(async () => {
    v = await startLiveVault('agent-vault');
    server = await v.registerServer();
  });
  after(async () => v.stop());

  it('enrolls with its own key, heartbeats with its credential, and obeys pause and throttle', async () => {
    // An item in initial replication (enrolled once by the harness); a fresh token re-enrolls it with this agent.
    const seeded = await v.enrollAgent(server, [{ name: 'sda', sizeBytes: 1 << 20 }]);
    const t = await v.call('POST', `/api/v1/items/${seeded.itemId}/enrollment-token`, v.ownerToken, {});
    assert.equal(t.status, 201, t.text);
    const token = String(t.json.token);
    const stateDir = join(v.tmpDir, 'agent-state');
    const image = join(v.tmpDir, 'sda.img');
    writeFileSync(image, Buffer.alloc(1 << 20));
    const config = parseAgentFileConfig({ disks: [{ name: 'sda', tracker: { kind: 'scan', path: image } }] });
    const vault = new HttpVaultClient(v.server.url);
    const r = await enroll({ vaultUrl: v.server.url, itemId: seeded.itemId, token, config, stateDir, vault });
    assert.equal(r.itemId, seeded.itemId);
    const state = new StateDir(stateDir);
    const id = state.identity();
    const cert = new X509Certificate(id.certificatePem);
    assert.equal(cert.subject, `CN=agent-${id.machineId}`);
    assert.ok(cert.checkIssued(new X509Certificate(id.caPem)));
    assert.ok(cert.publicKey.equals(createPublicKey(createPrivateKey(id.keyPem))), 'the certificate is for the key made here');
    assert.deepEqual(r.config.disks, [{ name: 'sda', storeDisk: `${seeded.itemId}.sda` }]);
    for (const line of v.logLines) assert.ok(!line.includes(token) && !line.includes(id.credential), 'no secret in the vault log');

    // The agent's heartbeat (the Agent builds the report) with the real HTTP client.
    const disk = new FakeDisk({ sizeBytes: 1 << 20 });
    const agent = new Agent({
      stateDir,
      config,
      vault,
      connect: new FakeProcessServer().connect,
      openTracker: async () => disk.tracker(),
      version: '0.1.0',
    });
    assert.equal(await agent.heartbeat(), true);
    const shown = await v.call('GET', `/api/v1/items/${seeded.itemId}/agent`, v.ownerToken);
    assert.equal(shown.status, 200, shown.text);
    assert.match(shown.text, /"sda"/);

    assert.equal((await v.call('POST', `/api/v1/items/${seeded.itemId}/pause`, v.ownerToken, {})).status, 200);
    const th = await v.call('PATCH', `/api/v1/items/${seeded.itemId}/throttle`, v.ownerToken, { throttleMbps: 8 });
    assert.equal(th.status, 200, th.text);
    assert.equal(await agent.heartbeat(), true);
    assert.equal(agent.currentConfig.paused, true);
    assert.equal(agent.currentConfig.throttleBytesPerSec, 1_000_000);
    assert.equal(state.config()?.paused, true, 'kept for the next start');
    assert.equal(agent.report().disks[0]?.state, 'paused');
  });
});
