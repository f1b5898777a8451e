import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ROLES } from '../../../src/core/model.js';
import { PERMISSIONS, ROLE_PERMISSIONS, roleAllows } from '../../../src/vault/http/permissions.js';
import { declaredRoutes } from '../../../src/vault/http/route.js';
import { bearer, concretePath, makeApi } from './harness.js';

test('the role table is the issue\'s: owner all, contributor no user management, operator operates but never configures, reader reads', () => {
  assert.deepEqual([...ROLES].sort(), Object.keys(ROLE_PERMISSIONS).sort());
  assert.deepEqual([...ROLE_PERMISSIONS.owner].sort(), [...PERMISSIONS].sort());
  assert.ok(roleAllows('contributor', 'configure') && roleAllows('contributor', 'operate') && !roleAllows('contributor', 'manage-users'));
  assert.ok(roleAllows('operator', 'operate') && roleAllows('operator', 'read'));
  assert.ok(!roleAllows('operator', 'configure') && !roleAllows('operator', 'manage-users'));
  assert.deepEqual(ROLE_PERMISSIONS.reader, ['read']);
  for (const role of ROLES) assert.ok(roleAllows(role, 'read'), `${role} reads`);
});

test('every declared route refuses a caller without a valid token with 401 UNAUTHENTICATED', async () => {
  const { app } = await makeApi();
  const routes = declaredRoutes(app);
  assert.ok(routes.length >= 10, `registry has ${routes.length} routes`);
  for (const r of routes) {
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: 'Basic dXNlcjpwYXNz' }, { authorization: 'Bearer ' }]) {
      const res = await app.inject({ method: r.method, url: concretePath(r.url), headers, ...(r.schema.body ? { payload: {} } : {}) });
      assert.equal(res.statusCode, 401, `${r.id} with ${JSON.stringify(headers)}: ${res.body}`);
      assert.equal(res.json().code, 'UNAUTHENTICATED');
      assert.equal(res.headers['www-authenticate'], 'Bearer');
    }
  }
  // Unknown paths do not reveal themselves to anonymous callers either.
  assert.equal((await app.inject({ method: 'GET', url: '/api/v1/no-such-thing' })).statusCode, 401);
  // The public ones answer without a token.
  for (const url of ['/healthz', '/readyz', '/api/docs']) assert.equal((await app.inject({ method: 'GET', url })).statusCode, 200, url);
});

test('role x route matrix: each role passes authorization exactly where its permissions allow', async () => {
  const { app, tokenOf, audit } = await makeApi();
  let cells = 0;
  for (const r of declaredRoutes(app)) {
    for (const role of ROLES) {
      audit.length = 0;
      // An invalid body or id: allowed callers get past authorization and stop at validation or lookup.
      const res = await app.inject({ method: r.method, url: concretePath(r.url), headers: bearer(tokenOf[role]), ...(r.schema.body ? { payload: { unknownField: 1 } } : {}) });
      cells += 1;
      if (roleAllows(role, r.permission)) {
        assert.notEqual(res.statusCode, 403, `${role} on ${r.id} (${r.permission}) must pass: ${res.body}`);
        assert.notEqual(res.statusCode, 401);
        assert.ok(res.statusCode < 500, `${role} on ${r.id}: ${res.body}`);
      } else {
        assert.equal(res.statusCode, 403, `${role} on ${r.id} (${r.permission}) must be refused: ${res.body}`);
        const body = res.json();
        assert.equal(body.code, 'FORBIDDEN');
        assert.match(body.detail, new RegExp(`${role}.*${r.permission}`));
        if (r.mutating) {
          assert.equal(audit.length, 1, `${r.id}: the refusal is audited`);
          assert.equal(audit[0]?.outcome, 'denied');
          assert.equal(audit[0]?.action, r.id);
          assert.equal(audit[0]?.requestId, res.headers['x-request-id']);
        }
      }
    }
  }
  assert.equal(cells, declaredRoutes(app).length * ROLES.length);
});

test('allowed mutations are audited with actor, action, target and request id; reads are not', async () => {
  const { app, tokenOf, audit } = await makeApi();
  const created = await app.inject({ method: 'POST', url: '/api/v1/tokens', headers: bearer(tokenOf.reader), payload: { name: 'ci' } });
  assert.equal(created.statusCode, 201);
  const id = created.json().token.id as string;
  await app.inject({ method: 'GET', url: '/api/v1/tokens', headers: bearer(tokenOf.reader) });
  const del = await app.inject({ method: 'DELETE', url: `/api/v1/tokens/${id}`, headers: { ...bearer(tokenOf.reader), 'x-request-id': 'req-42' } });
  assert.equal(del.statusCode, 204);
  assert.equal(del.headers['x-request-id'], 'req-42');
  assert.deepEqual(
    audit.map((a) => [a.action, a.target, a.outcome]),
    [
      ['tokens.create', null, 'allowed'],
      ['tokens.revoke', id, 'allowed'],
    ],
  );
  assert.equal(audit[1]?.requestId, 'req-42');
  assert.ok(audit.every((a) => a.actor.length > 0));
});

test('a revoked or expired token no longer authenticates', async () => {
  const h = await makeApi();
  const created = await h.app.inject({ method: 'POST', url: '/api/v1/tokens', headers: bearer(h.tokenOf.operator), payload: { name: 'short', expiresInDays: 1 } });
  const { secret, token } = created.json() as { secret: string; token: { id: string } };
  assert.equal((await h.app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(secret) })).statusCode, 200);
  h.clock.now = new Date(h.clock.now.getTime() + 2 * 86_400_000);
  assert.equal((await h.app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(secret) })).statusCode, 401);
  h.clock.now = new Date(h.clock.now.getTime() - 2 * 86_400_000);
  await h.app.inject({ method: 'DELETE', url: `/api/v1/tokens/${token.id}`, headers: bearer(h.tokenOf.operator) });
  assert.equal((await h.app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(secret) })).statusCode, 401);
});

test("revoking another user's token needs manage-users; without it the token is not found", async () => {
  const h = await makeApi();
  const owned = (await h.app.inject({ method: 'POST', url: '/api/v1/tokens', headers: bearer(h.tokenOf.owner), payload: { name: 'o' } })).json();
  const byReader = await h.app.inject({ method: 'DELETE', url: `/api/v1/tokens/${owned.token.id}`, headers: bearer(h.tokenOf.contributor) });
  assert.equal(byReader.statusCode, 404);
  const mine = (await h.app.inject({ method: 'POST', url: '/api/v1/tokens', headers: bearer(h.tokenOf.reader), payload: { name: 'r' } })).json();
  assert.equal((await h.app.inject({ method: 'DELETE', url: `/api/v1/tokens/${mine.token.id}`, headers: bearer(h.tokenOf.owner) })).statusCode, 204);
});

test('route() refuses declarations without strict schemas or with a body on GET', async () => {
  const { route } = await import('../../../src/vault/http/route.js');
  const { default: Fastify } = await import('fastify');
  const app = Fastify();
  const handler = async () => ({});
  assert.throws(
    () => route(app, { id: 'x.loose', method: 'POST', url: '/api/v1/x', permission: 'configure', summary: 's', schema: { body: { type: 'object', properties: {} } }, handler }),
    /additionalProperties/,
  );
  assert.throws(
    () =>
      route(app, {
        id: 'x.nested',
        method: 'POST',
        url: '/api/v1/x',
        permission: 'configure',
        summary: 's',
        schema: { body: { type: 'object', additionalProperties: false, properties: { inner: { type: 'object' } } } },
        handler,
      }),
    /inner.*additionalProperties/,
  );
  assert.throws(() => route(app, { id: 'x.nobody', method: 'POST', url: '/api/v1/x', permission: 'configure', summary: 's', schema: {}, handler }), /body schema/);
  assert.throws(
    () => route(app, { id: 'x.get', method: 'GET', url: '/api/v1/x', permission: 'read', summary: 's', schema: { body: { type: 'object', additionalProperties: false } }, handler }),
    /takes no body/,
  );
  assert.throws(() => route(app, { id: 'x.perm', method: 'GET', url: '/api/v1/x', permission: 'admin' as never, summary: 's', schema: {}, handler }), /permission/);
});
