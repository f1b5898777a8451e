/**
 * Thousands of generated requests against the real assembled vault's routes with an
 * owner token: random path parameters, query strings, bodies shaped after each
 * route's schema or not at all, garbage. Never a 5xx, every error is problem+json
 * with the request id, and the vault still answers correctly afterwards.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { InjectOptions } from 'fastify';
import { declaredRoutes } from '../../../src/vault/http/route.js';
import { startLiveVault } from './harness.js';

test('thousands of random requests over the real routes: no 5xx, problem+json with a request id, still answering', async () => {
  const v = await startLiveVault('fuzz');
  try {
    const reg = await v.registerServer();
    // SSE streams stay open by design; an unknown job id still answers at once, so they stay in with random ids only.
    const routes = declaredRoutes(v.server.app);
    const realIds = [reg.vaultId, reg.serverId, '01JAAAAAAAAAAAAAAAAAAAAAAA'];
    const param = fc.oneof(
      fc.constantFrom(...realIds.filter((id) => id !== reg.serverId)),
      fc.string({ maxLength: 40 }).map((s) => encodeURIComponent(s) || 'x'),
      fc.constantFrom('..', '%2e%2e', '%00', '%zz', '%2F', '*', 'x'.repeat(200), '__proto__', 'constructor', '-1', '1e9'),
    );
    const scalar = fc.oneof(fc.string({ maxLength: 60 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constantFrom(...realIds, '', 'owner', 'password', '2026-11-01T12:00:00Z'));
    const value = fc.oneof(scalar, fc.array(scalar, { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 3 }));
    const shaped = (keys: string[]) =>
      fc.dictionary(fc.oneof(fc.constantFrom(...(keys.length > 0 ? keys : ['name'])), fc.string({ maxLength: 10 })), value, { maxKeys: Math.max(1, keys.length + 1) });
    const garbage = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }).map((j) => JSON.stringify(j)),
      fc.constantFrom('[', '{"a":', 'null', '""', '{}', '\u0000', '{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{}}}', '{"name":"x\\ud800"}'),
      fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b).toString('latin1')),
      fc.integer({ min: 50, max: 2000 }).map((d) => `${'{"name":['.repeat(d)}1${']}'.repeat(d)}`),
    );
    const query = fc.oneof(
      fc.constant(''),
      fc.constantFrom('?limit=1', '?limit=0', '?limit=-1', '?limit=1e9', '?limit=abc', '?limit=1&limit=2', '?after=%00', '?__proto__[x]=1', '?state=open', '?configServerId=x'),
      fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 30 })).map(([k, val]) => `?${encodeURIComponent(k)}=${encodeURIComponent(val)}`),
    );
    const request = fc.record({
      route: fc.constantFrom(...routes),
      params: fc.array(param, { minLength: 3, maxLength: 3 }),
      method: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS') }),
      query,
      bodyKind: fc.constantFrom('shaped', 'shaped', 'garbage', 'none'),
      garbage,
      contentType: fc.constantFrom('application/json', 'application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', ''),
      auth: fc.constantFrom('owner', 'owner', 'owner', 'server', 'none'),
    });

    let count = 0;
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(request, fc.context(), async (r, ctx) => {
        count += 1;
        let i = 0;
        const url = r.route.url.replace(/:[A-Za-z0-9_]+/g, () => r.params[i++] ?? 'x') + r.query;
        const method = r.method ?? r.route.method;
        const props = Object.keys((r.route.schema.body?.properties as Record<string, unknown> | undefined) ?? {});
        const headers: Record<string, string> = {};
        if (r.auth === 'owner') headers.authorization = `Bearer ${v.ownerToken}`;
        if (r.auth === 'server') headers.authorization = `Bearer ${reg.credential}`;
        const options: InjectOptions = { method: method as InjectOptions['method'], url, headers };
        if (r.bodyKind !== 'none' && method !== 'GET') {
          headers['content-type'] = r.contentType;
          options.payload = r.bodyKind === 'garbage' ? r.garbage : JSON.stringify(fc.sample(shaped(props), { numRuns: 1, seed: count })[0]);
        }
        ctx.log(`${method} ${url} ${String(options.payload ?? '').slice(0, 200)}`);
        const res = await v.server.app.inject(options);
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        assert.ok(res.statusCode < 500, `${method} ${url} -> ${res.statusCode} ${res.body.slice(0, 300)}`);
        assert.ok(res.headers['x-request-id'], 'request id header');
        if (res.statusCode >= 400) {
          assert.match(String(res.headers['content-type']), /^application\/problem\+json/, `${method} ${url}: ${res.statusCode}`);
          const body = res.json() as { status: number; code: string; requestId: string };
          assert.equal(body.status, res.statusCode);
          assert.equal(typeof body.code, 'string');
          assert.equal(body.requestId, res.headers['x-request-id']);
        }
      }),
      { numRuns: 3000, interruptAfterTimeLimit: 120_000, markInterruptAsFailure: false },
    );
    assert.ok(count >= 1000, `only ${count} requests ran in the time limit`);
    // Requests got past validation too, not only refused at the door.
    assert.ok([...statuses.keys()].some((s) => s < 300), `statuses: ${JSON.stringify([...statuses])}`);
    assert.ok([...statuses.keys()].includes(400) && [...statuses.keys()].includes(404), `statuses: ${JSON.stringify([...statuses])}`);

    // Still answering over the network, and still correct.
    const me = await v.call('GET', '/api/v1/me', v.ownerToken);
    assert.equal(me.status, 200);
    assert.equal(me.json.role, 'owner');
    const vault = await v.call('GET', `/api/v1/vaults/${reg.vaultId}`, v.ownerToken);
    assert.equal(vault.status, 200, vault.text);
    assert.equal((await v.call('GET', '/readyz')).status, 200);
    // No log line at error level: nothing failed inside the vault.
    const errors = v.logLines.filter((l) => l.includes('"level":"error"'));
    assert.deepEqual(errors, []);
  } finally {
    await v.stop();
  }
});
