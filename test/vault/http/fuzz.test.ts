import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { InjectOptions } from 'fastify';
import { declaredRoutes } from '../../../src/vault/http/route.js';
import { bearer, concretePath, makeApi } from './harness.js';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'] as const;

/** Deeply nested JSON as text (JSON.stringify itself would overflow the stack). */
function deep(depth: number): string {
  return `${'{"name":['.repeat(depth)}1${']}'.repeat(depth)}`;
}

test('thousands of random requests: never a 5xx, every error is problem+json, the server keeps answering', async () => {
  const h = await makeApi();
  const routes = declaredRoutes(h.app).map((r) => r.url);
  const segment = fc.oneof(
    fc.constantFrom('api', 'v1', 'users', 'policies', 'tokens', 'me', 'metrics', '..', '.', '', '%2e%2e', '%00', '%zz', '%E0%A4%A', '%2F', ';x=1', '*'),
    fc.string({ maxLength: 12 }).map(encodeURIComponent),
    fc.string({ maxLength: 300 }).map(encodeURIComponent),
  );
  const path = fc.oneof(
    fc.constantFrom(...routes).map(concretePath),
    fc.constantFrom(...routes).chain((u) => segment.map((s) => u.replace(/:[a-z]+/g, s || 'x'))),
    fc.array(segment, { maxLength: 6 }).map((segs) => `/${segs.join('/')}`),
    fc.array(segment, { maxLength: 3 }).map((segs) => `/api/v1/${segs.join('/')}`),
  );
  const query = fc.oneof(
    fc.constant(''),
    fc.constantFrom('?limit=1', '?limit=-1', '?limit=1e9', '?limit=abc', '?limit=1&limit=2', '?after=%00', '?__proto__[x]=1', '?a[b][c]=d'),
    fc.string({ maxLength: 40 }).map((s) => `?${encodeURIComponent(s)}=${encodeURIComponent(s)}`),
  );
  const json = fc.oneof(
    fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
    fc.record({ vaultId: fc.string(), name: fc.string(), retentionHours: fc.oneof(fc.integer(), fc.double(), fc.string()) }).map((v) => JSON.stringify(v)),
    fc.record({ name: fc.string(), role: fc.constantFrom('owner', 'reader', 'root', '__proto__') }).map((v) => JSON.stringify(v)),
    fc.constantFrom('{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{}}}', '[', '{"a":', 'null', '""', '{}', '\u0000', '{"name":"x\\ud800"}'),
    fc.integer({ min: 100, max: 100_000 }).map(deep),
    fc.integer({ min: 1, max: 1_200_000 }).map((n) => JSON.stringify({ name: 'x'.repeat(n) })),
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
  );
  const contentType = fc.constantFrom(
    undefined,
    'application/json',
    'application/json; charset=utf-8',
    'application/problem+json',
    'text/plain',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/json; charset=latin1',
    '',
    ';;;',
  );
  const auth = fc.oneof(
    fc.constantFrom(...Object.values(h.tokenOf)).map((t) => bearer(t).authorization),
    fc.constantFrom(undefined, 'Bearer', 'Bearer  ', 'bearer x', 'Basic Zm9vOmJhcg==', `Bearer ${'a'.repeat(5000)}`, 'Bearer lbt_01JAAAAAAAAAAAAAAAAAAAAAAA_x'),
    fc.string({ maxLength: 50 }).map((s) => `Bearer ${s}`),
  );
  const requestId = fc.oneof(fc.constant(undefined), fc.string({ maxLength: 200 }));
  const request = fc.record({ method: fc.constantFrom(...METHODS), path, query, body: fc.option(json), contentType, auth, requestId });

  let count = 0;
  await fc.assert(
    fc.asyncProperty(request, async (r) => {
      count += 1;
      const headers: Record<string, string> = {};
      if (r.auth !== undefined) headers.authorization = r.auth;
      if (r.contentType !== undefined) headers['content-type'] = r.contentType;
      if (r.requestId !== undefined && /^[\x20-\x7e]*$/.test(r.requestId)) headers['x-request-id'] = r.requestId;
      const options: InjectOptions = { method: r.method, url: r.path + r.query, headers };
      if (r.body !== null) options.payload = r.body;
      const res = await h.app.inject(options);
      assert.ok(res.statusCode < 500, `${r.method} ${r.path}${r.query} -> ${res.statusCode} ${res.body.slice(0, 300)}`);
      if (res.statusCode >= 400 && r.method !== 'HEAD') {
        assert.match(String(res.headers['content-type']), /^application\/problem\+json/, `${r.method} ${r.path}: ${res.statusCode}`);
        const body = res.json() as { status: number; code: string; requestId: string };
        assert.equal(body.status, res.statusCode);
        assert.equal(typeof body.code, 'string');
        assert.equal(body.requestId, res.headers['x-request-id']);
      }
      assert.ok(res.headers['x-request-id'], 'request id header');
    }),
    { numRuns: 3000 },
  );
  assert.equal(count >= 3000, true);
  // Still answering, and still correct.
  const me = await h.app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(h.tokenOf.owner) });
  assert.equal(me.statusCode, 200);
  assert.equal(me.json().role, 'owner');
});
