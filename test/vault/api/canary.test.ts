/**
 * Canary secrets planted everywhere a secret enters the real vault (a user token,
 * push-account password and private key, registration key, server credential,
 * credentials in a store URL and a storage connection string, a vault's store passphrase,
 * an agent's enrollment token and credential), through successful and
 * failing requests, must never reach a log line (debug level), an API response other
 * than the one creation response that hands them out, the audit log, or the database
 * file in clear.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startLiveVault } from './harness.js';

const ACCOUNT_PASSWORD = 'CanaryAcctPassw0rd-71c2e9f4';
const KEY_BODY = 'CanaryPrivateKeyBody-b3f91d0a5e';
const PRIVATE_KEY = `-----BEGIN OPENSSH PRIVATE KEY-----\n${KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\n`;
const STORE_SECRET = 'CanaryS3SecretKey-9c8d7e6f';
const STORE_URL = `s3://AKIACANARY0000000000:${STORE_SECRET}@bucket/prefix`;
const AZURE_KEY = 'CanaryAzureAccountKey-5e6f7a8b';
const STORE_PASSPHRASE = 'CanaryStorePassphrase-4d5e6f70';
const CONNECTION_STRING = `DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=${AZURE_KEY};EndpointSuffix=core.windows.net`;

test('planted secrets never reach a log line, another response, the audit log or the database in clear', async () => {
  const v = await startLiveVault('canary');
  try {
    const { call, ownerToken } = v;
    const reg = await v.registerServer();
    const allowedResponses = new Set<string>([reg.registrationResponse]);

    // A user token, created once (its creation response is the one that may show it).
    const created = await call('POST', '/api/v1/tokens', ownerToken, { name: 'ci token', expiresInDays: 30 });
    assert.equal(created.status, 201, created.text);
    allowedResponses.add(created.text);
    const userToken = String(created.json.secret);
    const keyResponse = v.responses.find((r) => r.includes(reg.registrationKey));
    assert.ok(keyResponse, 'the registration key came from its creation response');
    allowedResponses.add(keyResponse);

    // A vault with a store passphrase (write-only); its creation response shows the store's recovery key once.
    const storeUrl = `file://${join(v.tmpDir, 'canary-store')}`;
    const withStore = await call('POST', '/api/v1/vaults', ownerToken, { name: 'canary-vault', location: 'west', storeUrl, storePassphrase: STORE_PASSPHRASE });
    assert.equal(withStore.status, 201, withStore.text);
    allowedResponses.add(withStore.text);
    const recoveryKey = String(withStore.json.storeRecoveryKey);
    assert.ok(!withStore.text.includes(STORE_PASSPHRASE));
    assert.equal((await v.server.stores.openVaultStore(String(withStore.json.id))).config.storeId.length > 0, true);
    // An agent: its enrollment token and its credential are shown once each.
    const agent = await v.enrollAgent(reg);
    allowedResponses.add(agent.enrollResponse);
    const tokenResponse = v.responses.find((r) => r.includes(agent.token) && r !== agent.enrollResponse);
    assert.ok(tokenResponse);
    allowedResponses.add(tokenResponse);
    const beat = await call('POST', '/api/v1/agents/self/heartbeat', agent.credential, { disks: [], version: '0.1.0' });
    assert.equal(beat.status, 200, beat.text);

    // Successful uses of every secret.
    assert.equal((await call('GET', '/api/v1/me', userToken)).status, 200);
    const heartbeat = await call('POST', `/api/v1/config-servers/${reg.serverId}/heartbeat`, reg.credential, { version: '0.1.0', clock: new Date().toISOString() });
    assert.equal(heartbeat.status, 200, heartbeat.text);
    const pw = await call('POST', '/api/v1/accounts', userToken, { configServerId: reg.serverId, name: 'root-pw', username: 'root', password: ACCOUNT_PASSWORD });
    assert.equal(pw.status, 201, pw.text);
    const pk = await call('POST', '/api/v1/accounts', userToken, { configServerId: reg.serverId, name: 'root-key', username: 'root', privateKey: PRIVATE_KEY });
    assert.equal(pk.status, 201, pk.text);
    for (const path of ['/api/v1/accounts', `/api/v1/accounts/${String(pw.json.id)}`, `/api/v1/accounts/${String(pk.json.id)}`, '/api/v1/tokens', '/api/v1/config-servers', '/api/v1/process-servers', '/metrics']) {
      assert.equal((await call('GET', path, ownerToken)).status, 200, path);
    }
    assert.equal((await call('GET', `/api/v1/vaults/${reg.vaultId}/registration-keys`, ownerToken)).status, 200);

    // Failing requests carrying the secrets in every place input can go.
    const failing: [string, string, string | undefined, unknown, number][] = [
      ['POST', '/api/v1/accounts', ownerToken, { configServerId: reg.serverId, name: 'both', username: 'root', password: ACCOUNT_PASSWORD, privateKey: PRIVATE_KEY }, 400],
      ['POST', '/api/v1/accounts', ownerToken, { configServerId: reg.serverId, name: 'extra', username: 'root', password: ACCOUNT_PASSWORD, note: ACCOUNT_PASSWORD }, 400],
      ['POST', '/api/v1/accounts', ownerToken, { configServerId: reg.serverId, name: 'typed', username: ACCOUNT_PASSWORD, password: 42 }, 400],
      ['POST', '/api/v1/accounts', ownerToken, { configServerId: reg.serverId, name: KEY_BODY, username: 'root', privateKey: { body: PRIVATE_KEY } }, 400],
      ['POST', '/api/v1/vaults', ownerToken, { name: 'w', location: 'w', storeUrl: STORE_URL, colour: STORE_SECRET }, 400],
      ['POST', '/api/v1/vaults', ownerToken, { name: 'w', location: 'w', storeUrl: CONNECTION_STRING }, 400],
      ['POST', '/api/v1/vaults', ownerToken, { name: 'w', location: 'w', storeUrl: STORE_URL, connectionString: CONNECTION_STRING }, 400],
      ['POST', '/api/v1/policies', ownerToken, { vaultId: reg.vaultId, name: 'p', retentionHours: userToken }, 400],
      ['POST', '/api/v1/tokens', ownerToken, { name: 'x', secret: userToken }, 400],
      ['POST', '/api/v1/config-servers/register', undefined, { registrationKey: `${reg.registrationKey}x`, name: 'cs-x', address: '10.0.0.9', version: '0.1.0', clock: new Date().toISOString() }, 401],
      ['POST', '/api/v1/config-servers/register', undefined, { registrationKey: reg.registrationKey, name: 'cs-y', address: '10.0.0.9', version: '0.1.0', clock: '1999-01-01T00:00:00Z' }, 0],
      ['POST', '/api/v1/config-servers/register', undefined, { registrationKey: reg.registrationKey, name: 'cs-z', address: `${reg.credential}/`, version: '0.1.0', clock: new Date().toISOString() }, 400],
      ['POST', '/api/v1/config-servers/register', undefined, { registrationKey: reg.registrationKey, extra: ACCOUNT_PASSWORD }, 400],
      ['POST', `/api/v1/config-servers/${reg.serverId}/heartbeat`, reg.credential, { version: '0.1.0', clock: new Date().toISOString(), credential: reg.credential }, 400],
      ['GET', '/api/v1/vaults', reg.credential, undefined, 403],
      ['POST', `/api/v1/config-servers/${reg.serverId}/heartbeat`, userToken, { version: '0.1.0', clock: new Date().toISOString() }, 403],
      ['GET', '/api/v1/vaults', ACCOUNT_PASSWORD, undefined, 401],
      ['GET', '/api/v1/vaults', `${userToken}x`, undefined, 401],
      ['GET', `/api/v1/vaults?token=${encodeURIComponent(userToken)}&password=${ACCOUNT_PASSWORD}`, ownerToken, undefined, 400],
      ['POST', '/api/v1/tokens', undefined, `{"password":"${ACCOUNT_PASSWORD}"}`, 401],
      ['POST', '/api/v1/accounts', ownerToken, `{"password":"${ACCOUNT_PASSWORD}",`, 400],
      // The same store with another passphrase: refused without echoing either.
      ['POST', '/api/v1/vaults', ownerToken, { name: 'canary-2', location: 'west', storeUrl, storePassphrase: `${STORE_PASSPHRASE}-wrong` }, 400],
      ['POST', '/api/v1/vaults', ownerToken, { name: 'canary-3', location: 'west', storeUrl, storePassphrase: STORE_PASSPHRASE, extra: STORE_PASSPHRASE }, 400],
      ['POST', '/api/v1/agents/enroll', undefined, { itemId: agent.itemId, token: agent.token, csrPem: 'x', hostname: 'h', disks: [{ name: 'sda', sizeBytes: 1, tracker: 'scan' }] }, 401],
      ['POST', '/api/v1/agents/self/heartbeat', agent.credential, { disks: [], version: '0.1.0', credential: agent.credential }, 400],
      ['GET', '/api/v1/vaults', agent.credential, undefined, 403],
    ];
    for (const [method, path, token, body, status] of failing) {
      const res = await call(method, path, token, body);
      if (status === 0) assert.ok(res.status >= 400 && res.status < 500, `${method} ${path}: ${res.text}`);
      else assert.equal(res.status, status, `${method} ${path}: ${res.text}`);
      assert.match(res.type, /application\/problem\+json/);
    }
    // The server-credential and authorization headers in other shapes.
    for (const authorization of [`Basic ${Buffer.from(`root:${ACCOUNT_PASSWORD}`).toString('base64')}`, `Bearer ${reg.registrationKey}`, `bearer ${reg.credential} extra`]) {
      const res = await fetch(`${v.server.url}/api/v1/me`, { headers: { authorization, cookie: `session=${ACCOUNT_PASSWORD}`, 'x-api-key': STORE_SECRET } });
      v.responses.push(await res.text());
      assert.equal(res.status, 401);
    }

    const canaries: Record<string, string> = {
      'owner token': ownerToken,
      'user token': userToken,
      'server credential': reg.credential,
      'registration key': reg.registrationKey,
      'account password': ACCOUNT_PASSWORD,
      'private key': KEY_BODY,
      'store URL secret': STORE_SECRET,
      'azure account key': AZURE_KEY,
      'store passphrase': STORE_PASSPHRASE,
      'store recovery key': recoveryKey,
      'enrollment token': agent.token,
      'agent credential': agent.credential,
    };
    // Debug-level logs were written (the test would prove nothing against a silent logger).
    const lines = v.logLines.join('').split('\n').filter(Boolean);
    assert.ok(lines.length > failing.length, `only ${lines.length} log lines`);
    assert.ok(lines.every((l) => JSON.parse(l) !== null), 'every log line is JSON');
    assert.ok(lines.some((l) => l.includes('"request done"') && l.includes('"accounts.create"')));
    for (const [what, secret] of Object.entries(canaries)) {
      const inLog = lines.find((l) => l.includes(secret));
      assert.equal(inLog, undefined, `${what} in a log line: ${inLog}`);
      const inResponse = v.responses.find((r) => r.includes(secret) && !allowedResponses.has(r));
      assert.equal(inResponse, undefined, `${what} in an API response: ${inResponse}`);
    }
    const audit = JSON.stringify(await v.server.repos.auditLog.list({ limit: 10_000 }));
    assert.ok(audit.includes('accounts.create'), 'the audit log has the account creations');
    for (const [what, secret] of Object.entries(canaries)) assert.ok(!audit.includes(secret), `${what} in the audit log`);

    await v.stop((dataDir) => {
      const files = ['vault.db', 'vault.db-wal', 'vault.db-journal'].map((f) => join(dataDir, f)).filter((f) => existsSync(f));
      assert.ok(files.length > 0);
      const bytes = Buffer.concat(files.map((f) => readFileSync(f)));
      assert.ok(bytes.includes('accounts.create'), 'the database file is readable as text where it is not sealed');
      for (const [what, secret] of Object.entries(canaries)) {
        assert.ok(!bytes.includes(secret), `${what} in the database file in clear`);
        assert.ok(!bytes.includes(Buffer.from(secret, 'utf16le')), `${what} in the database file (UTF-16)`);
      }
    });
  } finally {
    await v.stop();
  }
});

test('a secret inside an error that reaches the logger is redacted on every net: key, registered value, shape', async () => {
  const { createVaultLogger } = await import('../../../src/vault/logging/logger.js');
  const { registerSecret, unregisterSecret } = await import('../../../src/vault/secrets/redact.js');
  const lines: string[] = [];
  const log = createVaultLogger({ level: 'debug', destination: { write: (l: string) => void lines.push(l) } });
  const registered = 'CanaryRegistered-0f1e2d3c4b';
  registerSecret(registered);
  try {
    const err = Object.assign(new Error(`connect to ${STORE_URL} failed: password=${ACCOUNT_PASSWORD}`), { cause: new Error(`key ${registered}`) });
    log.error({ err, password: ACCOUNT_PASSWORD, nested: { privateKey: PRIVATE_KEY, url: STORE_URL, text: CONNECTION_STRING } }, 'job step failed');
    log.debug(`interpolated %s ${registered}`, PRIVATE_KEY);
    log.child({ token: ACCOUNT_PASSWORD }).info({ jobId: 'j1' }, 'job started');
    assert.equal(lines.length, 3);
    for (const secret of [ACCOUNT_PASSWORD, KEY_BODY, STORE_SECRET, AZURE_KEY, registered]) {
      assert.ok(!lines.some((l) => l.includes(secret)), `${secret} in ${lines.join('')}`);
    }
    const first = JSON.parse(lines[0] as string) as { msg: string; err: { message: string; stack: string }; level: string };
    assert.equal(first.msg, 'job step failed');
    assert.equal(first.level, 'error');
    assert.match(first.err.message, /failed: password=\[REDACTED\]/);
    assert.ok(first.err.stack.length > 0);
    assert.match(JSON.parse(lines[2] as string).msg, /^job started$/);
  } finally {
    unregisterSecret(registered);
  }
});

test('LIFEBOAT_LOG_LEVEL sets the level and a wrong value stops start-up', async () => {
  const { createVaultLogger } = await import('../../../src/vault/logging/logger.js');
  assert.equal(createVaultLogger({ env: { LIFEBOAT_LOG_LEVEL: 'warn' }, destination: { write: () => undefined } }).level, 'warn');
  assert.equal(createVaultLogger({ env: {}, destination: { write: () => undefined } }).level, 'info');
  assert.throws(() => createVaultLogger({ env: { LIFEBOAT_LOG_LEVEL: 'loud' } }), (err: Error & { code?: string }) => err.code === 'CONFIG_INVALID');
});
