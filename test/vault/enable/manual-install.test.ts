/**
 * Enable protection with a manual install: no push-install account; the job's
 * "Install the mobility service" step waits until the item's agent enrolls with a
 * token from POST /items/{id}/enrollment-token, then the item starts initial
 * replication. Push install without an account, and manual install with one, are refused.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { agentCsr } from '../api/harness.js';
import { makeTempDir } from '../../helpers/env.js';
import type { VaultServer } from '../../../src/vault/server.js';
import { client, seedBasics, start, waitFor } from '../replication/harness.js';

describe('enable protection: manual install', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: VaultServer;
  before(async () => {
    tmp = makeTempDir('enable-manual');
    server = await start(tmp.path, { jobs: { pollIntervalMs: 50 } });
  });
  after(async () => {
    await server?.close();
    tmp?.cleanup();
  });

  it('waits for the agent to enroll, then starts initial replication', async () => {
    const token = server.initialAdminToken as string;
    const { call } = client(server.url);
    const basics = await seedBasics(server, token, tmp.path);
    const machine = await call('POST', '/api/v1/machines', token, { configServerId: basics.configServerId, name: 'web-1', privateIp: '10.0.0.7', os: 'debian-12' });
    assert.equal(machine.status, 201, machine.text);
    const base = { vaultId: basics.vaultId, policyId: basics.policyId, configServerId: basics.configServerId, machines: [machine.json.id] };

    const noAccount = await call('POST', '/api/v1/replication/enable', token, base);
    assert.equal(noAccount.status, 400, noAccount.text);
    assert.match(noAccount.text, /push-install account/);
    const both = await call('POST', '/api/v1/replication/enable', token, { ...base, install: 'manual', accountId: String(machine.json.id) });
    assert.equal(both.status, 400, both.text);

    const enabled = await call('POST', '/api/v1/replication/enable', token, { ...base, install: 'manual' });
    assert.equal(enabled.status, 202, enabled.text);
    const itemId = String((enabled.json.items as { id: string }[])[0]?.id);
    const jobId = String((enabled.json.jobs as { id: string }[])[0]?.id);
    const stepOf = async (name: string) => ((await call('GET', `/api/v1/jobs/${jobId}`, token)).json.steps as { name: string; state: string }[]).find((s) => s.name === name);
    await waitFor('the install step to wait', async () => ((await stepOf('Install the mobility service'))?.state === 'running' ? true : undefined));
    // Still waiting a while later: nothing enrolled, nothing pretended.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await stepOf('Install the mobility service'))?.state, 'running');
    assert.equal((await call('GET', `/api/v1/items/${itemId}`, token)).json.state, 'enabling');

    const enrollToken = await call('POST', `/api/v1/items/${itemId}/enrollment-token`, token, {});
    assert.equal(enrollToken.status, 201, enrollToken.text);
    const enroll = await call('POST', '/api/v1/agents/enroll', undefined, {
      itemId,
      token: enrollToken.json.token,
      csrPem: (await agentCsr()).csrPem,
      hostname: 'web-1',
      disks: [{ name: 'sda', sizeBytes: 1 << 20, tracker: 'scan' }],
    });
    assert.equal(enroll.status, 201, enroll.text);
    const job = await waitFor('the job to end', async () => {
      const j = (await call('GET', `/api/v1/jobs/${jobId}`, token)).json;
      return ['succeeded', 'failed'].includes(String(j.state)) ? j : undefined;
    }, 20_000);
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.equal((await call('GET', `/api/v1/items/${itemId}`, token)).json.state, 'initial-replication');
  });
});
