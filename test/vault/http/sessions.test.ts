/**
 * Sign-in with a password, sessions and passwords on the real assembled vault
 * (startVaultServer through test/vault/api/harness.ts): a session token works like any
 * API token; every refused sign-in looks the same; repeated failures lock a name out
 * with 429 TOO_MANY_ATTEMPTS; sign-out revokes only its own token; setting a password
 * needs manage-users and changing one's own needs the current one; no password or hash
 * ever reaches a response, a log line or the audit log.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isLifeboatError } from '../../../src/core/errors.js';
import { SignInAttempts, hashPassword, verifyPassword } from '../../../src/vault/services/passwords.js';
import { startLiveVault, type Call, type LiveVault } from '../api/harness.js';

const PASSWORD = 'correct horse battery staple';
const OTHER_PASSWORD = 'another long enough password';

describe('sign-in, sessions and passwords', () => {
  let v: LiveVault;
  let tokens: Awaited<ReturnType<LiveVault['tokensByRole']>>;
  const users: Record<string, string> = {};
  const hashes: string[] = [];

  const createUser = async (name: string, role = 'operator'): Promise<string> => {
    const res = await v.call('POST', '/api/v1/users', v.ownerToken, { name, role });
    assert.equal(res.status, 201, res.text);
    users[name] = String(res.json.id);
    return String(res.json.id);
  };
  const setPassword = (userId: string, password: string, token = v.ownerToken): Promise<Call> => v.call('PUT', `/api/v1/users/${userId}/password`, token, { password });
  const signIn = (name: string, password: string): Promise<Call> => v.call('POST', '/api/v1/sessions', undefined, { name, password });

  before(async () => {
    v = await startLiveVault('sessions');
    tokens = await v.tokensByRole();
    for (const name of ['alice', 'bob', 'carol', 'dave', 'erin']) await createUser(name);
    for (const name of ['alice', 'bob', 'dave', 'erin']) assert.equal((await setPassword(users[name] as string, PASSWORD)).status, 204);
    await v.server.repos.users.update(users.dave as string, { disabled: true });
  });
  after(async () => v?.stop());

  it('signs in with name and password: a 12-hour session token that works like an API token', async () => {
    const before = Date.now();
    const res = await signIn('alice', PASSWORD);
    assert.equal(res.status, 201, res.text);
    assert.deepEqual(Object.keys(res.json).sort(), ['expiresAt', 'token', 'user']);
    const user = res.json.user as Record<string, unknown>;
    assert.deepEqual(user, { id: users.alice, name: 'alice', role: 'operator', createdAt: user.createdAt, disabled: false });
    const expires = Date.parse(String(res.json.expiresAt)) - before;
    assert.ok(expires > 11.9 * 3_600_000 && expires <= 12.1 * 3_600_000, `expires in ${expires} ms`);
    const token = String(res.json.token);
    assert.match(token, /^lbt_/);
    const me = await v.call('GET', '/api/v1/me', token);
    assert.equal(me.status, 200, me.text);
    assert.equal((me.json.user as { id: string }).id, users.alice);
    assert.equal(me.json.role, 'operator');
    const listed = await v.call('GET', '/api/v1/tokens', token);
    const session = (listed.json.items as { name: string; expiresAt: string }[]).find((t) => t.expiresAt === res.json.expiresAt);
    assert.match(session?.name ?? '', /^portal session /);
  });

  it('a wrong password, an unknown name, a disabled user and a user without a password are one and the same 401', async () => {
    const answers = [await signIn('bob', 'not the password at all'), await signIn('nobody-here', PASSWORD), await signIn('dave', PASSWORD), await signIn('carol', PASSWORD)];
    const shapes = answers.map((a) => {
      assert.equal(a.status, 401, a.text);
      assert.equal(a.json.code, 'UNAUTHENTICATED');
      const { requestId, ...rest } = a.json;
      assert.equal(typeof requestId, 'string');
      return rest;
    });
    for (const s of shapes.slice(1)) assert.deepEqual(s, shapes[0]);
    // Out-of-range fields are refused by the schema before any name is looked at.
    assert.equal((await v.call('POST', '/api/v1/sessions', undefined, { name: 'bob' })).status, 400);
  });

  it('after 5 failures for a name within 15 minutes, the 6th attempt is 429 TOO_MANY_ATTEMPTS, even with the right password; other names are unaffected', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await signIn('erin', `wrong password #${i}`)).status, 401);
    const locked = await signIn('erin', PASSWORD);
    assert.equal(locked.status, 429, locked.text);
    assert.equal(locked.json.code, 'TOO_MANY_ATTEMPTS');
    assert.match(String(locked.json.detail), /retry after \d{4}-\d\d-\d\dT/);
    assert.equal((await signIn('alice', PASSWORD)).status, 201);
    const audit = await v.server.repos.auditLog.list({ actor: 'anonymous:TOO_MANY_ATTEMPTS' });
    assert.equal(audit.length, 1);
    assert.equal(audit[0]?.action, 'sessions.create');
  });

  it('the lockout ends when the window passes, and a success forgets earlier failures (fake clock)', () => {
    let now = Date.parse('2026-11-26T08:00:00Z');
    const attempts = new SignInAttempts(() => new Date(now));
    for (let i = 0; i < 5; i++) {
      attempts.check('x');
      attempts.failed('x');
      now += 60_000;
    }
    assert.throws(
      () => attempts.check('x'),
      (err: unknown) => isLifeboatError(err, 'TOO_MANY_ATTEMPTS') && err.retryable && err.details.retryAt === '2026-11-26T08:15:00.000Z',
    );
    now = Date.parse('2026-11-26T08:15:00.001Z');
    attempts.check('x'); // the first failure left the window: 4 remain
    attempts.failed('x');
    assert.throws(() => attempts.check('x'));
    attempts.succeeded('x');
    attempts.check('x');
  });

  it('sign-out revokes the very session token it carries, no other; an API token is not a session', async () => {
    const first = String((await signIn('bob', PASSWORD)).json.token);
    const second = String((await signIn('bob', PASSWORD)).json.token);
    const out = await v.call('DELETE', '/api/v1/sessions/current', first);
    assert.equal(out.status, 204, out.text);
    assert.equal((await v.call('GET', '/api/v1/me', first)).status, 401);
    assert.equal((await v.call('GET', '/api/v1/me', second)).status, 200);
    const api = await v.call('DELETE', '/api/v1/sessions/current', tokens.reader);
    assert.equal(api.status, 409, api.text);
    assert.equal((await v.call('GET', '/api/v1/me', tokens.reader)).status, 200);
    const audit = await v.server.repos.auditLog.list({ actor: 'anonymous:UNAUTHENTICATED' });
    assert.ok(audit.length >= 4 && audit.every((a) => a.action === 'sessions.create' && a.outcome === 'denied' && a.target === null));
    const allowed = await v.server.repos.auditLog.list({ actor: users.bob as string });
    assert.ok(allowed.some((a) => a.action === 'sessions.create' && a.outcome === 'allowed' && a.target === users.bob));
  });

  it("setting a user's password needs manage-users; lengths outside 12..256 are VALIDATION", async () => {
    const refused = await setPassword(users.carol as string, PASSWORD, tokens.contributor);
    assert.equal(refused.status, 403, refused.text);
    assert.equal(refused.json.code, 'FORBIDDEN');
    assert.equal((await signIn('carol', PASSWORD)).status, 401, 'nothing changed');
    for (const bad of ['short', 'x'.repeat(257)]) {
      const res = await setPassword(users.carol as string, bad);
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.code, 'VALIDATION');
    }
    assert.equal((await setPassword('01JAAAAAAAAAAAAAAAAAAAAAAA', PASSWORD)).status, 404);
    assert.equal((await setPassword(users.carol as string, PASSWORD)).status, 204);
    assert.equal((await signIn('carol', PASSWORD)).status, 201);
  });

  it('changing one\'s own password needs the current one', async () => {
    const token = String((await signIn('alice', PASSWORD)).json.token);
    const wrong = await v.call('PUT', '/api/v1/me/password', token, { currentPassword: 'not my password', password: OTHER_PASSWORD });
    assert.equal(wrong.status, 400, wrong.text);
    assert.equal(wrong.json.code, 'VALIDATION');
    assert.deepEqual((wrong.json.errors as { field: string }[]).map((e) => e.field), ['/currentPassword']);
    assert.equal((await signIn('alice', PASSWORD)).status, 201, 'unchanged');
    const ok = await v.call('PUT', '/api/v1/me/password', token, { currentPassword: PASSWORD, password: OTHER_PASSWORD });
    assert.equal(ok.status, 204, ok.text);
    assert.equal((await signIn('alice', PASSWORD)).status, 401);
    assert.equal((await signIn('alice', OTHER_PASSWORD)).status, 201);
    // The first owner has no password yet: a user manager sets the first one.
    const none = await v.call('PUT', '/api/v1/me/password', v.ownerToken, { currentPassword: 'anything at all', password: OTHER_PASSWORD });
    assert.equal(none.status, 400, none.text);
  });

  it('hashes are scrypt$N$r$p$salt$hash and never reach a response, a log line or the audit log; passwords neither', async () => {
    for (const id of Object.values(users)) {
      const hash = await v.server.repos.users.passwordHash(id);
      if (hash !== null) hashes.push(hash);
    }
    assert.equal(hashes.length, 5);
    for (const h of hashes) assert.match(h, /^scrypt\$32768\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    const list = await v.call('GET', '/api/v1/users', v.ownerToken);
    assert.ok(!/password/i.test(list.text), list.text);
    const audit = JSON.stringify(await v.server.repos.auditLog.list({ limit: 10_000 }));
    const haystacks = { responses: v.responses.join('\n'), logs: v.logLines.join('\n'), audit };
    for (const [where, text] of Object.entries(haystacks)) {
      for (const h of hashes) {
        const [, , , , salt, digest] = h.split('$');
        for (const part of [h, salt as string, digest as string]) assert.ok(!text.includes(part), `a hash part is in the ${where}`);
      }
      for (const p of [PASSWORD, OTHER_PASSWORD]) assert.ok(!text.includes(p), `a password is in the ${where}`);
    }
    assert.ok(v.logLines.length > 0, 'the vault logged');
  });

  it('the OpenAPI document has the new routes; sign-in says it takes no bearer token', async () => {
    const doc = (await v.call('GET', '/api/docs')).json as { paths: Record<string, Record<string, { operationId: string; description: string }>> };
    const ops = {
      'post /api/v1/sessions': 'sessions.create',
      'delete /api/v1/sessions/current': 'sessions.delete-current',
      'put /api/v1/users/{id}/password': 'users.set-password',
      'put /api/v1/me/password': 'me.set-password',
      'get /api/v1/items/{id}/points': 'items.points',
      'get /api/v1/items/{id}/rpo-history': 'items.rpo-history',
    };
    for (const [key, id] of Object.entries(ops)) {
      const [method, path] = key.split(' ') as [string, string];
      assert.equal(doc.paths[path]?.[method]?.operationId, id, key);
    }
    assert.match(doc.paths['/api/v1/sessions']?.post?.description ?? '', /No bearer token/);
  });

  it('hashPassword and verifyPassword round-trip; a lower cost is recorded in the hash', async () => {
    const cheap = await hashPassword('a password of mine', { N: 1024, r: 8, p: 1 });
    assert.match(cheap, /^scrypt\$1024\$8\$1\$/);
    assert.equal(await verifyPassword(cheap, 'a password of mine'), true);
    assert.equal(await verifyPassword(cheap, 'a password of minE'), false);
    assert.notEqual(await hashPassword('a password of mine', { N: 1024, r: 8, p: 1 }), cheap, 'salted');
    await assert.rejects(verifyPassword('plain text', 'x'), (err: unknown) => isLifeboatError(err, 'INTERNAL'));
  });
});
