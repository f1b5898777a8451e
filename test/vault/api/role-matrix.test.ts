/**
 * Role x endpoint matrix over every route of the real assembled vault
 * (startVaultServer): no caller without a credential gets anywhere; each role
 * passes authorization exactly where the permission table allows; server
 * credentials open server routes only, agent credentials agent routes only, and
 * user tokens neither.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { ROLES, type Role } from '../../../src/core/model.js';
import { roleAllows } from '../../../src/vault/http/permissions.js';
import { declaredRoutes, type DeclaredRoute } from '../../../src/vault/http/route.js';
import { concretePath, startLiveVault, type EnrolledAgent, type LiveVault } from './harness.js';

describe('role x endpoint matrix on the assembled vault', () => {
  let v: LiveVault;
  let tokens: Record<Role, string>;
  let server: { vaultId: string; serverId: string; credential: string };
  let agent: EnrolledAgent;
  let routes: readonly DeclaredRoute[];

  before(async () => {
    v = await startLiveVault('matrix');
    tokens = await v.tokensByRole();
    server = await v.registerServer();
    agent = await v.enrollAgent(server);
    routes = declaredRoutes(v.server.app);
  });
  after(async () => v.stop());

  const send = (r: DeclaredRoute, authorization: string | undefined, id?: string): Promise<LightMyRequestResponse> =>
    v.server.app.inject({
      method: r.method,
      url: concretePath(r.url, id),
      headers: authorization ? { authorization } : {},
      // A body that fails validation: an allowed caller stops there, after authorization, and nothing changes.
      ...(r.schema.body ? { payload: { unknownField: 1 } } : {}),
    });

  const problem = (res: LightMyRequestResponse, status: number, code: string, what: string): void => {
    assert.equal(res.statusCode, status, `${what}: ${res.body}`);
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/, what);
    const body = res.json() as { code: string; requestId: string };
    assert.equal(body.code, code, what);
    assert.equal(body.requestId, res.headers['x-request-id'], what);
  };

  it('covers every route of the app, user and server routes alike', () => {
    assert.ok(routes.length >= 30, `only ${routes.length} routes`);
    const ids = routes.map((r) => r.id);
    for (const id of ['vaults.create', 'accounts.create', 'config-servers.register', 'config-servers.heartbeat', 'jobs.cancel', 'metrics.show', 'tokens.create', 'plans.create', 'plans.failover', 'plans.drill-settings-update', 'jobs.acknowledge']) assert.ok(ids.includes(id), id);
    for (const id of ['items.reprotect', 'items.failback', 'items.reverse', 'agents.reverse-digests', 'agents.reverse-batch', 'agents.reverse-ack']) assert.ok(ids.includes(id), id);
    assert.ok(routes.some((r) => r.caller === 'server' && r.bearer));
    assert.ok(routes.some((r) => !r.bearer));
  });

  it('refuses every route without a valid credential with 401', async () => {
    for (const r of routes) {
      for (const authorization of [undefined, 'Bearer lbt_nope', 'Bearer lbs_nope', `Bearer lba_${'n'.repeat(43)}`, 'Basic dXNlcjpwYXNz']) {
        if (!r.bearer && r.id === 'agents.enroll') {
          // Enrollment is authenticated by the one-time token in its body: a forged token is the missing credential.
          const res = await v.server.app.inject({
            method: r.method,
            url: r.url,
            headers: authorization ? { authorization } : {},
            payload: { itemId: agent.itemId, token: `lbe_${'x'.repeat(43)}`, csrPem: 'x', hostname: 'h', disks: [{ name: 'sda', sizeBytes: 1, tracker: 'scan' }] },
          });
          problem(res, 401, 'ENROLLMENT_INVALID', `${r.id} with a forged token`);
          continue;
        }
        if (!r.bearer && r.id === 'sessions.create') {
          // Sign-in is authenticated by the name and password in its body: a wrong password is the missing credential.
          const res = await v.server.app.inject({ method: r.method, url: r.url, headers: authorization ? { authorization } : {}, payload: { name: `nobody-${authorization ?? 'none'}`.slice(0, 100), password: 'not-the-password' } });
          problem(res, 401, 'UNAUTHENTICATED', `${r.id} with a wrong password`);
          continue;
        }
        if (!r.bearer) {
          // Registration is authenticated by the key in its body: a forged key is the missing credential.
          const res = await v.server.app.inject({
            method: r.method,
            url: r.url,
            headers: authorization ? { authorization } : {},
            payload: { registrationKey: 'lbrk.forged.x', name: 'cs-forged', address: '10.0.0.9', version: '0.1.0', clock: new Date().toISOString() },
          });
          problem(res, 401, 'REGISTRATION_KEY_INVALID', `${r.id} with a forged key`);
          continue;
        }
        const res = await send(r, authorization);
        problem(res, 401, 'UNAUTHENTICATED', `${r.id} with ${authorization ?? 'no credential'}`);
        assert.equal(res.headers['www-authenticate'], 'Bearer');
      }
    }
  });

  it('lets each role through exactly the user routes its permissions allow; FORBIDDEN otherwise', async () => {
    let cells = 0;
    for (const r of routes.filter((x) => x.caller === 'user')) {
      for (const role of ROLES) {
        const res = await send(r, `Bearer ${tokens[role]}`);
        cells += 1;
        const what = `${role} on ${r.id} (${r.permission})`;
        if (roleAllows(role, r.permission)) {
          assert.ok(res.statusCode !== 401 && res.statusCode !== 403, `${what} must pass: ${res.statusCode} ${res.body}`);
        } else {
          problem(res, 403, 'FORBIDDEN', what);
        }
      }
    }
    assert.ok(cells >= 25 * ROLES.length, `${cells} cells`);
  });

  it('an agent credential opens agent routes only', async () => {
    for (const r of routes) {
      if (!r.bearer) continue;
      const res = await send(r, `Bearer ${agent.credential}`);
      if (r.caller === 'agent') assert.ok(res.statusCode !== 401 && res.statusCode !== 403, `agent credential on ${r.id}: ${res.statusCode} ${res.body}`);
      else problem(res, 403, 'FORBIDDEN', `agent credential on ${r.id}`);
    }
  });

  it('a server credential opens server routes only; a user token never opens them', async () => {
    for (const r of routes) {
      if (r.caller === 'agent') {
        if (!r.bearer) continue; // enrollment: no bearer token at all (covered above)
        problem(await send(r, `Bearer ${server.credential}`), 403, 'FORBIDDEN', `server credential on ${r.id}`);
        for (const role of ROLES) problem(await send(r, `Bearer ${tokens[role]}`), 403, 'FORBIDDEN', `${role} token on ${r.id}`);
        continue;
      }
      if (r.caller === 'user') {
        if (!r.bearer) continue; // sign-in: no bearer token at all (covered above)
        problem(await send(r, `Bearer ${server.credential}`), 403, 'FORBIDDEN', `server credential on ${r.id}`);
        continue;
      }
      if (!r.bearer) continue; // registration: no bearer token at all (covered above)
      const own = await send(r, `Bearer ${server.credential}`, server.serverId);
      assert.ok(own.statusCode !== 401 && own.statusCode !== 403, `server credential on its own ${r.id}: ${own.statusCode} ${own.body}`);
      for (const role of ROLES) problem(await send(r, `Bearer ${tokens[role]}`, server.serverId), 403, 'FORBIDDEN', `${role} token on ${r.id}`);
    }
  });
});
