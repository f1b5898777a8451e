/**
 * `lifeboat server` on embedded defaults: it prints its URL and an admin token,
 * the API refuses callers without a token, a vault and a policy made through the
 * API survive a restart, and the admin token is shown only once.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir } from '../helpers/env.js';
import { lifeboatServe, stop } from '../helpers/cli.js';

describe('lifeboat server', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  before(() => {
    tmp = makeTempDir('server');
  });
  after(() => tmp.cleanup());

  const start = () => lifeboatServe(['server', '--data-dir', join(tmp.path, 'data'), '--listen', '127.0.0.1:0', '--json'], {});
  const call = async (url: string, method: string, path: string, token?: string, body?: unknown) => {
    const res = await fetch(url + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, type: res.headers.get('content-type') ?? '', json: (await res.json()) as Record<string, unknown> };
  };

  it('serves the API, keeps its state across a restart, and shows the admin token once', async () => {
    const first = await start();
    const url = String(first.json.url);
    const token = String(first.json.adminToken);
    let policyId: string;
    try {
      assert.match(token, /^lbt_/);
      const anonymous = await call(url, 'GET', '/api/v1/vaults');
      assert.equal(anonymous.status, 401);
      assert.match(anonymous.type, /application\/problem\+json/);
      assert.equal(anonymous.json.code, 'UNAUTHENTICATED');

      const vault = await call(url, 'POST', '/api/v1/vaults', token, { name: 'recovery-west', location: 'west', storeUrl: `file://${join(tmp.path, 'store')}` });
      assert.equal(vault.status, 201, JSON.stringify(vault.json));
      const policy = await call(url, 'POST', '/api/v1/policies', token, { vaultId: vault.json.id, name: 'gold', rpoThresholdSeconds: 600 });
      assert.equal(policy.status, 201, JSON.stringify(policy.json));
      assert.equal(policy.json.rpoThresholdSeconds, 600);
      policyId = String(policy.json.id);
      const bad = await call(url, 'POST', '/api/v1/policies', token, { vaultId: vault.json.id, name: 'x', colour: 'red' });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.code, 'VALIDATION');
      for (const secretUrl of ['s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/p', 'azblob://acct/c?sv=2024&sig=c2VjcmV0']) {
        const refused = await call(url, 'POST', '/api/v1/vaults', token, { name: 'leaky', location: 'west', storeUrl: secretUrl });
        assert.equal(refused.status, 400, secretUrl);
        assert.equal(refused.json.code, 'VALIDATION');
        assert.ok(!JSON.stringify(refused.json).includes('wJalrXUtnFEMI') && !JSON.stringify(refused.json).includes('c2VjcmV0'));
      }
      const docs = await call(url, 'GET', '/api/docs');
      assert.ok(Object.keys((docs.json as { paths: Record<string, unknown> }).paths).includes('/api/v1/vaults'));
    } finally {
      await stop(first.child);
    }

    const second = await start();
    try {
      assert.equal(second.json.adminToken, null);
      const shown = await call(String(second.json.url), 'GET', `/api/v1/policies/${policyId}`, token);
      assert.equal(shown.status, 200);
      assert.equal(shown.json.name, 'gold');
    } finally {
      await stop(second.child);
    }
  });
});
