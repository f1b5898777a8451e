/**
 * Seed steps 2-4 through the real vault server: registration keys, registering a
 * configuration server (expired, forged, revoked keys and clock skew refused),
 * heartbeats with the server credential, and the vault's readiness check.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { openDatabase } from '../../../src/vault/db/open.js';
import { createRepositories, type Repositories } from '../../../src/vault/db/repositories/index.js';
import { configServersRoutes } from '../../../src/vault/http/routes/config-servers.js';
import { registrationKeysRoutes } from '../../../src/vault/http/routes/registration-keys.js';
import { tokensRoutes } from '../../../src/vault/http/routes/tokens.js';
import { vaultCheckRoutes } from '../../../src/vault/http/routes/vault-check.js';
import { vaultsRoutes } from '../../../src/vault/http/routes/vaults.js';
import { buildApi } from '../../../src/vault/http/server.js';
import type { Principal } from '../../../src/vault/http/types.js';
import { SecretBox, loadOrCreateVaultKey } from '../../../src/vault/secrets/secret-box.js';
import { DbTokens, DbVaults } from '../../../src/vault/services/db-services.js';
import { RegistrationService } from '../../../src/vault/services/registration.js';
import { VaultChecks } from '../../../src/vault/services/vault-check.js';
import { makeTempDir } from '../../helpers/env.js';

const FIVE_DAYS_MS = 5 * 24 * 3600 * 1000;

interface VaultServer {
  url: string;
  initialAdminToken: string;
  repos: Repositories;
  close(): Promise<void>;
}

/** The same assembly as src/vault/server.ts, limited to the routes under test, on a SQLite file in dataDir. */
async function startVault(dataDir: string, now: () => Date): Promise<VaultServer> {
  const db = await openDatabase(`sqlite://${join(dataDir, 'vault.db')}`, { now });
  const repos = createRepositories(db, { now });
  const tokens = new DbTokens(repos, now);
  const adminUser = await repos.users.create({ name: 'admin', role: 'owner' });
  const initialAdminToken = (await tokens.create({ userId: adminUser.id, name: 'admin', expiresAt: null })).secret;
  const registration = new RegistrationService(repos, new SecretBox(await loadOrCreateVaultKey(join(dataDir, 'vault.key'))), now);
  const app: FastifyInstance = await buildApi({
    now,
    authenticate: async (bearer): Promise<Principal | undefined> => {
      const found = await tokens.verify(bearer);
      if (found) return { kind: 'token', id: found.token.id, role: found.user.role, userId: found.user.id };
      const server = await registration.authenticateServer(bearer);
      return server && { kind: 'server', id: server.id, role: 'reader' };
    },
    audit: async (entry) => void (await repos.auditLog.append(entry)),
    routes: [
      tokensRoutes(tokens, now),
      vaultsRoutes(new DbVaults(repos)),
      registrationKeysRoutes(registration),
      configServersRoutes(registration, async (entry) => void (await repos.auditLog.append(entry)), now),
      vaultCheckRoutes(new VaultChecks(repos, now)),
    ],
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    initialAdminToken,
    repos,
    close: async () => {
      await app.close();
      await db.close();
    },
  };
}

describe('registration keys and configuration servers', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: VaultServer;
  let admin: string;
  const clock = { now: new Date('2026-11-01T12:00:00.000Z') };
  const at = (deltaMs: number) => new Date(clock.now.getTime() + deltaMs).toISOString();

  before(async () => {
    tmp = makeTempDir('registration');
    mkdirSync(join(tmp.path, 'data'), { mode: 0o700 });
    server = await startVault(join(tmp.path, 'data'), () => clock.now);
    admin = server.initialAdminToken;
  });
  after(async () => {
    await server.close();
    tmp.cleanup();
  });

  const call = async (method: string, path: string, token?: string, body?: unknown) => {
    const res = await fetch(server.url + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, text, json: (text ? JSON.parse(text) : {}) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  let n = 0;
  const makeVault = async (recoveryNetwork: string | null = 'recovery-net', storeUrl = `file://${join(tmp.path, `store-${++n}`)}`) => {
    const v = await call('POST', '/api/v1/vaults', admin, { name: `vault-${++n}`, location: 'west', storeUrl, recoveryNetwork });
    assert.equal(v.status, 201, v.text);
    return String(v.json.id);
  };
  const makeKey = async (vaultId: string) => {
    const k = await call('POST', `/api/v1/vaults/${vaultId}/registration-keys`, admin, {});
    assert.equal(k.status, 201, k.text);
    return k.json as { id: string; key: string; expiresAt: string; vaultId: string };
  };
  const register = (key: string, name: string, callerClock = at(0)) =>
    call('POST', '/api/v1/config-servers/register', undefined, { registrationKey: key, name, address: '10.0.0.5', version: '0.1.0', clock: callerClock });

  it('walks the flow: vault, key, register, heartbeat, list; the key text is never listed nor audited', async () => {
    const vaultId = await makeVault();
    const key = await makeKey(vaultId);
    assert.match(key.key, /^lbrk1\./);
    assert.equal(key.vaultId, vaultId);
    assert.equal(Date.parse(key.expiresAt) - clock.now.getTime(), FIVE_DAYS_MS);

    const listed = await call('GET', `/api/v1/vaults/${vaultId}/registration-keys`, admin);
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.json.items.map((k: { id: string }) => k.id), [key.id]);
    assert.ok(!listed.text.includes(key.key.split('.')[2] as string), 'no key text in the list');

    const reg = await register(key.key, 'cs-primary');
    assert.equal(reg.status, 201, reg.text);
    const credential = String(reg.json.credential);
    assert.match(credential, /^lbs_/);
    const serverId = String(reg.json.server.id);
    assert.equal(reg.json.server.vaultId, vaultId);
    assert.equal(reg.json.processServer.name, 'built-in');
    assert.equal(reg.json.processServer.configServerId, serverId);

    const hb = await call('POST', `/api/v1/config-servers/${serverId}/heartbeat`, credential, {
      version: '0.1.1',
      clock: at(1000),
      processServers: [{ name: 'built-in', spoolUsedBytes: 1000, spoolLimitBytes: 10_000, throughputBytesPerSec: 500 }],
    });
    assert.equal(hb.status, 200, hb.text);
    assert.equal(hb.json.server.health, 'healthy');
    assert.equal(hb.json.server.version, '0.1.1');
    assert.equal(hb.json.server.lastHeartbeatAt, clock.now.toISOString());

    const servers = await call('GET', '/api/v1/config-servers', admin);
    assert.deepEqual(servers.json.items.map((s: { id: string }) => s.id), [serverId]);
    const shown = await call('GET', `/api/v1/config-servers/${serverId}`, admin);
    assert.equal(shown.json.version, '0.1.1');
    const ps = await call('GET', '/api/v1/process-servers', admin);
    assert.equal(ps.json.items.length, 1);
    assert.equal(ps.json.items[0].spoolUsedBytes, 1000);
    assert.equal(ps.json.items[0].throughputBytesPerSec, 500);
    assert.equal(ps.json.items[0].health, 'healthy');

    const refreshed = await call('POST', `/api/v1/config-servers/${serverId}/refresh`, admin, {});
    assert.equal(refreshed.status, 200, refreshed.text);
    assert.equal(refreshed.json.lastRefreshAt, clock.now.toISOString());

    // The same name again in that vault is a conflict, not a second server.
    assert.equal((await register(key.key, 'cs-primary')).status, 409);

    const audit = await server.repos.auditLog.list({});
    const auditText = JSON.stringify(audit);
    assert.ok(!auditText.includes(key.key.split('.')[2] as string), 'no key text in the audit log');
    assert.ok(!auditText.includes(credential), 'no server credential in the audit log');
    assert.ok(audit.some((e) => e.action === 'config-servers.register' && e.outcome === 'allowed' && e.target === serverId));
    const settingsText = JSON.stringify(await server.repos.settings.list());
    assert.match(settingsText, /lbs1:/, 'the vault secret is sealed');
  });

  it('refuses a key issued 5 days + 1 ms ago with REGISTRATION_KEY_EXPIRED naming the expiry, and accepts it at exactly 5 days', async () => {
    const vaultId = await makeVault();
    const start = clock.now;
    const key = await makeKey(vaultId);
    try {
      clock.now = new Date(start.getTime() + FIVE_DAYS_MS + 1);
      const late = await register(key.key, 'cs-late');
      assert.equal(late.status, 401);
      assert.equal(late.json.code, 'REGISTRATION_KEY_EXPIRED');
      assert.ok(String(late.json.detail).includes(key.expiresAt), late.text);
      clock.now = new Date(start.getTime() + FIVE_DAYS_MS);
      assert.equal((await register(key.key, 'cs-just-in-time')).status, 201);
    } finally {
      clock.now = start;
    }
  });

  it('refuses forged, tampered, revoked and unknown keys with REGISTRATION_KEY_INVALID', async () => {
    const vaultA = await makeVault();
    const vaultB = await makeVault();
    const key = await makeKey(vaultA);
    const [prefix, body, mac] = key.key.split('.') as [string, string, string];
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
    const forgedMac = `${prefix}.${body}.${flip(mac, 5)}`;
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, string>;
    const otherVault = `${prefix}.${Buffer.from(JSON.stringify({ ...payload, vaultId: vaultB })).toString('base64url')}.${mac}`;
    const longer = `${prefix}.${Buffer.from(JSON.stringify({ ...payload, expiresAt: '2099-01-01T00:00:00.000Z' })).toString('base64url')}.${mac}`;
    for (const bad of [forgedMac, `${prefix}.${flip(body, 10)}.${mac}`, otherVault, longer, 'lbrk1.x.y', 'not-a-key']) {
      const r = await register(bad, 'cs-forged');
      assert.equal(r.status, 401, bad);
      assert.equal(r.json.code, 'REGISTRATION_KEY_INVALID', r.text);
    }
    const revoked = await makeKey(vaultA);
    assert.equal((await call('DELETE', `/api/v1/vaults/${vaultB}/registration-keys/${revoked.id}`, admin)).status, 404, 'not through another vault');
    assert.equal((await call('DELETE', `/api/v1/vaults/${vaultA}/registration-keys/${revoked.id}`, admin)).status, 204);
    const r = await register(revoked.key, 'cs-revoked');
    assert.equal(r.json.code, 'REGISTRATION_KEY_INVALID');
    assert.match(String(r.json.detail), /revoked/);
    const keys = await call('GET', `/api/v1/vaults/${vaultA}/registration-keys`, admin);
    assert.equal(keys.json.items.find((k: { id: string }) => k.id === revoked.id).revoked, true);
    assert.equal((await call('GET', '/api/v1/config-servers', admin)).json.items.filter((s: { name: string }) => s.name === 'cs-forged' || s.name === 'cs-revoked').length, 0);
    const denied = (await server.repos.auditLog.list({})).filter((e) => e.action === 'config-servers.register' && e.outcome === 'denied');
    assert.ok(denied.length >= 7);
    assert.ok(!JSON.stringify(denied).includes(mac));
  });

  it('refuses a clock 5:01 off either way with CLOCK_SKEW naming both times, and accepts 4:59', async () => {
    const vaultId = await makeVault();
    const key = await makeKey(vaultId);
    for (const delta of [301_000, -301_000]) {
      const r = await register(key.key, `cs-skew-${delta > 0 ? 'ahead' : 'behind'}`, at(delta));
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.code, 'CLOCK_SKEW');
      assert.ok(String(r.json.detail).includes(at(delta)) && String(r.json.detail).includes(at(0)), r.text);
    }
    assert.equal((await register(key.key, 'cs-ahead', at(299_000))).status, 201);
    assert.equal((await register(key.key, 'cs-behind', at(-299_000))).status, 201);
    assert.equal((await register(key.key, 'cs-bad-clock', 'yesterday-ish')).status, 400);
  });

  it('keeps server credentials and user tokens apart', async () => {
    const vaultId = await makeVault();
    const key = await makeKey(vaultId);
    const one = await register(key.key, 'cs-one');
    const two = await register(key.key, 'cs-two');
    const credential = String(one.json.credential);
    const hb = { version: '0.1.0', clock: at(0) };
    for (const [method, path, body] of [
      ['GET', '/api/v1/vaults', undefined],
      ['GET', '/api/v1/config-servers', undefined],
      ['GET', '/api/v1/tokens', undefined],
      ['POST', `/api/v1/vaults/${vaultId}/registration-keys`, {}],
      ['POST', `/api/v1/config-servers/${String(one.json.server.id)}/refresh`, {}],
    ] as const) {
      const r = await call(method, path, credential, body);
      assert.equal(r.status, 403, `${method} ${path}: ${r.text}`);
      assert.equal(r.json.code, 'FORBIDDEN');
    }
    const admins = await call('POST', `/api/v1/config-servers/${String(one.json.server.id)}/heartbeat`, admin, hb);
    assert.equal(admins.status, 403, admins.text);
    const others = await call('POST', `/api/v1/config-servers/${String(two.json.server.id)}/heartbeat`, credential, hb);
    assert.equal(others.status, 403, 'not the heartbeat of another server');
    const forged = await call('POST', `/api/v1/config-servers/${String(one.json.server.id)}/heartbeat`, `${credential.slice(0, -2)}xx`, hb);
    assert.equal(forged.status, 401);
    const skewed = await call('POST', `/api/v1/config-servers/${String(one.json.server.id)}/heartbeat`, credential, { ...hb, clock: at(600_000) });
    assert.equal(skewed.status, 200);
    assert.equal(skewed.json.server.health, 'warning', 'a drifting clock is reported, not refused');
  });

  it('checks the target store with a probe and names what is wrong', async () => {
    const good = await makeVault();
    const ok = await call('POST', `/api/v1/vaults/${good}/check`, admin, {});
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json.store, { ok: true });
    assert.equal(ok.json.recoveryNetwork.ok, true);
    assert.equal(ok.json.ok, true);

    const blocker = join(tmp.path, 'a-file');
    writeFileSync(blocker, 'not a folder');
    const bad = await makeVault(null, `file://${blocker}/store`);
    const notOk = await call('POST', `/api/v1/vaults/${bad}/check`, admin, {});
    assert.equal(notOk.status, 200, notOk.text);
    assert.equal(notOk.json.ok, false);
    assert.equal(notOk.json.store.ok, false);
    assert.ok(String(notOk.json.store.error).length > 0);
    assert.equal(notOk.json.recoveryNetwork.ok, false);
    assert.match(notOk.json.recoveryNetwork.reason, /no recovery network/);

    const reader = await call('POST', `/api/v1/vaults/${good}/check`, undefined, {});
    assert.equal(reader.status, 401);
  });
});
