/**
 * Agent enrollment and the agent routes on the real assembled vault
 * (docs/replication.md, "Identity, enrollment and certificates").
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { isLifeboatError } from '../../../src/core/errors.js';
import { agentCsr, startLiveVault, type LiveVault } from '../api/harness.js';

describe('agent enrollment', () => {
  let v: LiveVault;
  let server: { vaultId: string; serverId: string; credential: string };

  before(async () => {
    v = await startLiveVault('enroll');
    server = await v.registerServer();
  });
  after(async () => v.stop());

  const enrollBody = async (itemId: string, token: string) => ({
    itemId,
    token,
    csrPem: (await agentCsr()).csrPem,
    hostname: 'web-1',
    disks: [{ name: 'sda', sizeBytes: 1 << 20, tracker: 'scan' }],
  });
  const refused = (res: { status: number; json: Record<string, unknown> }, what: string) => {
    assert.equal(res.status, 401, what);
    assert.equal(res.json.code, 'ENROLLMENT_INVALID', what);
  };

  it('enrolls once: certificate CN agent-<machineId> chained to the CA, a credential, the config; the token is spent', async () => {
    const a = await v.enrollAgent(server, [
      { name: 'sda', sizeBytes: 1 << 20 },
      { name: 'sdb', sizeBytes: 2 << 20 },
    ]);
    const body = JSON.parse(a.enrollResponse) as Record<string, unknown>;
    const cert = new X509Certificate(a.certificatePem);
    assert.equal(cert.subject, `CN=agent-${a.machineId}`);
    assert.ok(cert.checkIssued(new X509Certificate(String(body.caPem))));
    assert.match(a.credential, /^lba_/);
    const config = body.config as { disks: { name: string; storeDisk: string }[]; generation: number; paused: boolean; processServer: { port: number } };
    assert.deepEqual(config.disks, [
      { name: 'sda', storeDisk: `${a.itemId}.sda` },
      { name: 'sdb', storeDisk: `${a.itemId}.sdb` },
    ]);
    assert.equal(config.generation, 1);
    assert.equal(config.paused, false);
    assert.equal(config.processServer.port, 9443);
    const item = await v.call('GET', `/api/v1/items/${a.itemId}`, v.ownerToken);
    assert.deepEqual(item.json.disks, [
      { name: 'sda', sizeBytes: 1 << 20 },
      { name: 'sdb', sizeBytes: 2 << 20 },
    ]);
    // The same token again (a replay): refused, whatever the CSR.
    refused(await v.call('POST', '/api/v1/agents/enroll', undefined, await enrollBody(a.itemId, a.token)), 'replayed token');
    // The process server's question: the current certificate of this machine, and its store disks.
    const grant = await v.server.processServerBackend.authorize({ machineId: a.machineId, certificateSerial: cert.serialNumber.toLowerCase() });
    assert.deepEqual(grant, { machineId: a.machineId, itemId: a.itemId, vaultId: server.vaultId, generation: 1, disks: [`${a.itemId}.sda`, `${a.itemId}.sdb`] });
    // Tokens and credentials: hashes only in the database, never in a log line.
    for (const secret of [a.token, a.credential]) {
      for (const line of v.logLines) assert.ok(!line.includes(secret), `a log line holds a secret: ${line}`);
    }
  });

  it('refuses an expired token, another item\'s token, an unknown token, all alike', async () => {
    const a = await v.enrollAgent(server);
    const b = await v.enrollAgent(server);
    const forB = await v.call('POST', `/api/v1/items/${b.itemId}/enrollment-token`, v.ownerToken, {});
    assert.equal(forB.status, 201, forB.text);
    const tokenB = String(forB.json.token);
    assert.ok(Date.parse(String(forB.json.expiresAt)) - Date.now() > 23 * 3600 * 1000);
    const wrongItem = await v.call('POST', '/api/v1/agents/enroll', undefined, await enrollBody(a.itemId, tokenB));
    refused(wrongItem, 'token of another item');
    const unknown = await v.call('POST', '/api/v1/agents/enroll', undefined, await enrollBody(a.itemId, `lbe_${'A'.repeat(43)}`));
    refused(unknown, 'unknown token');
    assert.equal(unknown.json.detail, wrongItem.json.detail, 'every refusal reads the same');
    // Expired: the same token a day later.
    await v.server.repos.db.run('UPDATE enrollment_tokens SET expires_at = ? WHERE item_id = ?', [new Date(Date.now() - 1000).toISOString(), b.itemId]);
    refused(await v.call('POST', '/api/v1/agents/enroll', undefined, await enrollBody(b.itemId, tokenB)), 'expired token');
    const audit = await v.server.repos.auditLog.list();
    assert.ok(audit.some((e) => e.action === 'agents.enroll' && e.outcome === 'denied' && e.actor === 'anonymous:ENROLLMENT_INVALID'));
  });

  it('a tampered CSR is refused and does not spend the token; re-enrolling replaces the certificate and the credential', async () => {
    const a = await v.enrollAgent(server);
    const t = await v.call('POST', `/api/v1/items/${a.itemId}/enrollment-token`, v.ownerToken, {});
    const token = String(t.json.token);
    const body = await enrollBody(a.itemId, token);
    const tampered = { ...body, csrPem: body.csrPem.replace(/[A-Za-z](?=[A-Za-z0-9+/=]*\n-----END)/, (c) => (c === 'A' ? 'B' : 'A')) };
    const bad = await v.call('POST', '/api/v1/agents/enroll', undefined, tampered);
    assert.equal(bad.json.code, 'ENROLLMENT_INVALID', bad.text);
    const again = await v.call('POST', '/api/v1/agents/enroll', undefined, body);
    assert.equal(again.status, 201, again.text);
    // The first certificate and credential are refused from now on.
    const oldSerial = new X509Certificate(a.certificatePem).serialNumber;
    await assert.rejects(v.server.processServerBackend.authorize({ machineId: a.machineId, certificateSerial: oldSerial }), (err) => isLifeboatError(err, 'AGENT_UNAUTHORIZED'));
    const newSerial = new X509Certificate(String(again.json.certificatePem)).serialNumber;
    assert.equal((await v.server.processServerBackend.authorize({ machineId: a.machineId, certificateSerial: newSerial })).itemId, a.itemId);
    const old = await v.call('POST', '/api/v1/agents/self/heartbeat', a.credential, { disks: [], version: '0.1.0' });
    assert.equal(old.status, 401);
    await assert.rejects(v.server.processServerBackend.authorize({ machineId: 'nobody', certificateSerial: newSerial }), (err) => isLifeboatError(err, 'AGENT_UNAUTHORIZED'));
  });

  it('heartbeat: the agent credential reports its disks and gets its config; pause, resume and throttle reach it', async () => {
    const a = await v.enrollAgent(server);
    const beat = (percent: number) =>
      v.call('POST', '/api/v1/agents/self/heartbeat', a.credential, {
        disks: [{ name: 'sda', sizeBytes: 1 << 20, state: 'initial', initialPercent: percent, ackedSequence: 3, lagMs: 1200, lastError: null }],
        version: '0.1.0',
      });
    const first = await beat(40);
    assert.equal(first.status, 200, first.text);
    assert.deepEqual(first.json, {
      mode: 'replicate',
      generation: 1,
      paused: false,
      throttleBytesPerSec: 0,
      crashConsistentFrequencySeconds: 30,
      appConsistentFrequencyMinutes: 60,
      disks: [{ name: 'sda', storeDisk: `${a.itemId}.sda` }],
      processServer: { host: '127.0.0.1', port: 9443, serverName: '127.0.0.1' },
    });
    assert.equal((await v.server.repos.items.get(a.itemId)).initialReplicationPercent, 40);
    await beat(20); // out of order: progress never goes back
    assert.equal((await v.server.repos.items.get(a.itemId)).initialReplicationPercent, 40);
    const agent = (await v.call('GET', `/api/v1/items/${a.itemId}/agent`, v.ownerToken)).json as { disks: { lagMs: number; state: string }[]; version: string };
    assert.equal(agent.disks[0]?.lagMs, 1200);
    assert.equal(agent.disks[0]?.state, 'initial');
    assert.equal(agent.version, '0.1.0');

    const tokens = await v.tokensByRole();
    assert.equal((await v.call('POST', `/api/v1/items/${a.itemId}/pause`, tokens.reader, {})).status, 403);
    const paused = await v.call('POST', `/api/v1/items/${a.itemId}/pause`, tokens.operator, {});
    assert.deepEqual(paused.json, { itemId: a.itemId, paused: true, throttleBytesPerSec: 0 });
    const throttled = await v.call('PATCH', `/api/v1/items/${a.itemId}/throttle`, tokens.operator, { throttleMbps: 8 });
    assert.deepEqual(throttled.json, { itemId: a.itemId, paused: true, throttleBytesPerSec: 1_000_000 });
    const told = await beat(50);
    assert.equal(told.json.paused, true);
    assert.equal(told.json.throttleBytesPerSec, 1_000_000);
    await v.call('POST', `/api/v1/items/${a.itemId}/resume`, tokens.operator, {});
    assert.equal((await beat(50)).json.paused, false);

    // A user token cannot pose as an agent; the agent credential opens nothing else.
    assert.equal((await v.call('POST', '/api/v1/agents/self/heartbeat', v.ownerToken, { disks: [], version: '0.1.0' })).json.code, 'FORBIDDEN');
    assert.equal((await v.call('GET', '/api/v1/items', a.credential)).json.code, 'FORBIDDEN');
    assert.equal((await v.call('POST', `/api/v1/items/${a.itemId}/enrollment-token`, a.credential, {})).json.code, 'FORBIDDEN');
    for (const line of v.logLines) assert.ok(!line.includes(a.credential), `a log line holds the credential: ${line}`);
  });
});
