import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { LifeboatError } from '../../../src/core/errors.js';
import { declaredRoutes, route } from '../../../src/vault/http/route.js';
import type { RouteModule } from '../../../src/vault/http/types.js';
import { bearer, CANARY, makeApi } from './harness.js';

function assertProblem(res: LightMyRequestResponse, status: number, code: string): Record<string, unknown> {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = res.json() as Record<string, unknown>;
  for (const key of ['type', 'title', 'status', 'code', 'detail', 'instance', 'requestId']) assert.ok(key in body, `${key} in ${res.body}`);
  assert.equal(body.status, status);
  assert.equal(body.code, code);
  assert.equal(body.requestId, res.headers['x-request-id']);
  return body;
}

const faulty: RouteModule = {
  name: 'faulty',
  register(app) {
    route(app, {
      id: 'faulty.crash',
      method: 'GET',
      url: '/api/v1/faulty',
      permission: 'read',
      summary: 'fails like a bug, with a secret in its message',
      schema: {},
      handler: async () => {
        throw new Error(`connect failed: password=${CANARY} token ${CANARY}`);
      },
    });
    route(app, {
      id: 'faulty.busy',
      method: 'GET',
      url: '/api/v1/busy',
      permission: 'read',
      summary: 'fails with a retryable error',
      schema: {},
      handler: async () => {
        throw new LifeboatError('STORAGE_UNAVAILABLE', 'the store did not answer');
      },
    });
  },
};

test('validation: unknown fields, wrong types and missing fields are 400 VALIDATION listing every field', async () => {
  const { app, tokenOf } = await makeApi();
  const h = bearer(tokenOf.owner);
  let body = assertProblem(
    await app.inject({ method: 'POST', url: '/api/v1/policies', headers: h, payload: { vaultId: 'v1', name: 'p', retentionHours: 'long', colour: 'red' } }),
    400,
    'VALIDATION',
  );
  const fields = (body.errors as { field: string; in: string }[]).map((e) => e.field).sort();
  assert.deepEqual(fields, ['/colour', '/retentionHours']);
  body = assertProblem(await app.inject({ method: 'POST', url: '/api/v1/policies', headers: h, payload: { name: 'p' } }), 400, 'VALIDATION');
  assert.deepEqual((body.errors as { field: string }[]).map((e) => e.field), ['/vaultId']);
  body = assertProblem(await app.inject({ method: 'GET', url: '/api/v1/users?limit=0&sort=name', headers: h }), 400, 'VALIDATION');
  assert.deepEqual((body.errors as { field: string; in: string }[]).map((e) => `${e.in}:${e.field}`).sort(), ['querystring:/limit', 'querystring:/sort']);
  // Range and cross-field rules come back the same way.
  body = assertProblem(
    await app.inject({ method: 'POST', url: '/api/v1/policies', headers: h, payload: { vaultId: 'v1', name: 'p', retentionHours: 1, appConsistentFrequencyMinutes: 120 } }),
    400,
    'VALIDATION',
  );
  assert.deepEqual((body.errors as { field: string }[]).map((e) => e.field), ['/appConsistentFrequencyMinutes']);
  assertProblem(await app.inject({ method: 'PATCH', url: '/api/v1/policies/x', headers: h, payload: {} }), 400, 'VALIDATION');
  // Nothing was created by any of the refused requests.
  assert.equal((await app.inject({ method: 'GET', url: '/api/v1/policies', headers: h })).json().items.length, 0);
});

test('policies: create, show, patch, list with pagination; names are unique per vault', async () => {
  const { app, tokenOf } = await makeApi();
  const h = bearer(tokenOf.contributor);
  const ids: string[] = [];
  for (const name of ['a', 'b', 'c']) {
    const res = await app.inject({ method: 'POST', url: '/api/v1/policies', headers: h, payload: { vaultId: 'v1', name, rpoThresholdSeconds: 600 } });
    assert.equal(res.statusCode, 201, res.body);
    ids.push(res.json().id);
  }
  assertProblem(await app.inject({ method: 'POST', url: '/api/v1/policies', headers: h, payload: { vaultId: 'v1', name: 'a' } }), 409, 'CONFLICT');
  const patched = await app.inject({ method: 'PATCH', url: `/api/v1/policies/${ids[0]}`, headers: h, payload: { retentionHours: 48 } });
  assert.equal(patched.json().retentionHours, 48);
  assert.equal((await app.inject({ method: 'GET', url: `/api/v1/policies/${ids[0]}`, headers: bearer(tokenOf.reader) })).json().retentionHours, 48);
  const page1 = (await app.inject({ method: 'GET', url: '/api/v1/policies?limit=2', headers: h })).json();
  assert.equal(page1.items.length, 2);
  const page2 = (await app.inject({ method: 'GET', url: `/api/v1/policies?limit=2&after=${page1.nextCursor}`, headers: h })).json();
  assert.deepEqual(page2, { items: [page2.items[0]], nextCursor: null });
  assert.deepEqual([...page1.items, ...page2.items].map((p: { id: string }) => p.id), ids);
  assertProblem(await app.inject({ method: 'GET', url: '/api/v1/policies/01JAAAAAAAAAAAAAAAAAAAAAAA', headers: h }), 404, 'NOT_FOUND');
});

test('malformed requests are problem+json: bad JSON, wrong content type, too large, unknown route, wrong method, bad encoding, body on DELETE', async () => {
  const { app, tokenOf } = await makeApi();
  const h = bearer(tokenOf.owner);
  const json = { ...h, 'content-type': 'application/json' };
  assertProblem(await app.inject({ method: 'POST', url: '/api/v1/policies', headers: json, payload: '{"vaultId": ' }), 400, 'USAGE');
  assertProblem(await app.inject({ method: 'POST', url: '/api/v1/policies', headers: json, payload: '' }), 400, 'USAGE');
  assertProblem(await app.inject({ method: 'POST', url: '/api/v1/policies', headers: { ...h, 'content-type': 'text/plain' }, payload: 'x' }), 415, 'USAGE');
  assertProblem(await app.inject({ method: 'POST', url: '/api/v1/policies', headers: json, payload: `"${'x'.repeat(1_100_000)}"` }), 413, 'USAGE');
  assertProblem(await app.inject({ method: 'GET', url: '/api/v1/nothing-here', headers: h }), 404, 'NOT_FOUND');
  const wrong = await app.inject({ method: 'PUT', url: '/api/v1/policies/abc', headers: json, payload: '{}' });
  assertProblem(wrong, 405, 'USAGE');
  assert.equal(wrong.headers.allow, 'GET, PATCH');
  assertProblem(await app.inject({ method: 'GET', url: '/api/v1/%E0%A4%A', headers: h }), 400, 'USAGE');
  // GET bodies are ignored by Fastify; a DELETE, which has no body schema, refuses one.
  assertProblem(await app.inject({ method: 'DELETE', url: '/api/v1/tokens/abc', headers: json, payload: '{"a":1}' }), 400, 'VALIDATION');
  assertProblem(await app.inject({ method: 'POST', url: '/api/v1/policies', headers: json, payload: '{"__proto__": {"x": 1}}' }), 400, 'USAGE');
});

test('request ids: a well-formed x-request-id is kept, anything else replaced, and every response carries one', async () => {
  const { app, tokenOf } = await makeApi();
  const kept = await app.inject({ method: 'GET', url: '/api/v1/me', headers: { ...bearer(tokenOf.reader), 'x-request-id': 'abc-123' } });
  assert.equal(kept.headers['x-request-id'], 'abc-123');
  const replaced = await app.inject({ method: 'GET', url: '/api/v1/me', headers: { 'x-request-id': 'evil\u0000id with spaces' } });
  assert.match(String(replaced.headers['x-request-id']), /^[0-9A-Z]{26}$/);
  assert.equal(replaced.json().requestId, replaced.headers['x-request-id']);
  const a = await app.inject({ method: 'GET', url: '/healthz' });
  const b = await app.inject({ method: 'GET', url: '/healthz' });
  assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id']);
});

test('secrets: a token secret appears only in its creation response; a bug never leaks its message', async () => {
  const { app, tokenOf } = await makeApi({ extraRoutes: [faulty] });
  const h = bearer(tokenOf.owner);
  const created = await app.inject({ method: 'POST', url: '/api/v1/tokens', headers: h, payload: { name: 'ci' } });
  const secret = created.json().secret as string;
  assert.match(secret, /^lbt_/);
  const responses = [
    await app.inject({ method: 'GET', url: '/api/v1/tokens', headers: h }),
    await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(secret) }),
    await app.inject({ method: 'GET', url: '/api/v1/users', headers: h }),
    await app.inject({ method: 'GET', url: '/metrics', headers: h }),
  ];
  for (const res of responses) {
    assert.ok(!res.body.includes(secret), res.body);
    assert.ok(!res.body.includes('secretHash'), res.body);
  }
  const crash = await app.inject({ method: 'GET', url: '/api/v1/faulty', headers: h });
  const body = assertProblem(crash, 500, 'INTERNAL');
  assert.ok(!crash.body.includes(CANARY) && !crash.body.includes('connect failed'), crash.body);
  assert.match(String(body.detail), new RegExp(String(body.requestId)));
  // A retryable failure is 503 and says what happened.
  assertProblem(await app.inject({ method: 'GET', url: '/api/v1/busy', headers: h }), 503, 'STORAGE_UNAVAILABLE');
});

test('the OpenAPI document lists every declared route with its operation id', async () => {
  const { app } = await makeApi();
  const res = await app.inject({ method: 'GET', url: '/api/docs' });
  const doc = res.json() as { openapi: string; paths: Record<string, Record<string, { operationId: string }>> };
  assert.match(doc.openapi, /^3\./);
  for (const r of declaredRoutes(app)) {
    const path = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    assert.equal(doc.paths[path]?.[r.method.toLowerCase()]?.operationId, r.id, `${r.method} ${path} in the document`);
  }
});

test('/metrics counts requests by route pattern and status and has a latency histogram', async () => {
  const { app, tokenOf } = await makeApi();
  for (let i = 0; i < 3; i++) await app.inject({ method: 'GET', url: '/api/v1/policies/whatever', headers: bearer(tokenOf.reader) });
  await app.inject({ method: 'GET', url: '/api/v1/users' });
  const text = (await app.inject({ method: 'GET', url: '/metrics', headers: bearer(tokenOf.reader) })).body;
  assert.match(text, /lifeboat_http_requests_total\{route="\/api\/v1\/policies\/:id",method="GET",status="404"\} 3\n/);
  assert.match(text, /lifeboat_http_requests_total\{route="\/api\/v1\/users",method="GET",status="401"\} 1\n/);
  assert.match(text, /lifeboat_http_request_duration_seconds_bucket\{route="\/api\/v1\/policies\/:id",le="\+Inf"\} 3\n/);
  assert.match(text, /# TYPE lifeboat_http_request_duration_seconds histogram/);
});

test('readiness follows deps.ready; liveness does not', async () => {
  let ready = false;
  const { app } = await makeApi({ ready: () => ready });
  assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 503);
  assert.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  ready = true;
  assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
});

test('over a real socket on 127.0.0.1: authenticated call, problem+json refusal, request id header', async () => {
  const { app, tokenOf } = await makeApi();
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const ok = await fetch(`${address}/api/v1/me`, { headers: bearer(tokenOf.operator) });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { role: string }).role, 'operator');
    const refused = await fetch(`${address}/api/v1/policies`, {
      method: 'POST',
      headers: { ...bearer(tokenOf.operator), 'content-type': 'application/json' },
      body: JSON.stringify({ vaultId: 'v', name: 'p' }),
    });
    assert.equal(refused.status, 403);
    assert.match(refused.headers.get('content-type') ?? '', /problem\+json/);
    assert.equal(((await refused.json()) as { requestId: string }).requestId, refused.headers.get('x-request-id'));
  } finally {
    await app.close();
  }
});
