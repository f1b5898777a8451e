import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LifeboatError } from '../../../src/core/errors.js';
import { REDACTED, redact, registerSecret, unregisterSecret } from '../../../src/vault/secrets/redact.js';

const CANARY = 'canary-5ecret-d41d8cd9';
const PEM = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----';

/** Every string anywhere in the output, after JSON serialisation (what a log line holds). */
const serialised = (value: unknown): string => JSON.stringify(value);

test('values under secret-looking keys are replaced at any depth, in objects and arrays', () => {
  const input = {
    msg: 'push install',
    account: { username: 'root', password: CANARY, nested: [{ privateKey: PEM }, { passphrase: CANARY }] },
    headers: { Authorization: `Bearer ${CANARY}`, 'x-request-id': 'r1' },
    storage: { connection_string: `DefaultEndpointsProtocol=https;AccountKey=${CANARY}`, clientSecret: CANARY, sasToken: CANARY },
    api_token: CANARY,
    tokens: [CANARY],
    count: 3,
    ok: true,
    none: null,
  };
  const out = redact(input) as typeof input;
  assert.ok(!serialised(out).includes(CANARY));
  assert.ok(!serialised(out).includes('b3BlbnNzaC1rZXkt'));
  assert.equal(out.account.password, REDACTED);
  assert.equal(out.account.username, 'root');
  assert.equal(out.headers['x-request-id'], 'r1');
  assert.equal(out.count, 3);
  assert.equal(out.ok, true);
  assert.equal(out.none, null);
  assert.equal(out.msg, 'push install');
  // The input is never changed.
  assert.equal(input.account.password, CANARY);
});

test('a registered canary is cut out of every string, whatever its key', () => {
  registerSecret(CANARY);
  try {
    const out = redact({
      message: `ssh: login with ${CANARY} failed`,
      list: ['a', `x${CANARY}y`, { deep: { deeper: [`${CANARY}${CANARY}`] } }],
      map: new Map([['note', CANARY]]),
    });
    assert.ok(!serialised(out).includes(CANARY), serialised(out));
    assert.match(serialised(out), /login with \[REDACTED\] failed/);
  } finally {
    unregisterSecret(CANARY);
  }
  assert.equal(redact(`plain ${CANARY}`), `plain ${CANARY}`);
  assert.equal(redact(`extra ${CANARY}`, [CANARY]), `extra ${REDACTED}`);
});

test('error messages, stacks, causes and details lose their secrets', () => {
  const inner = new Error(`connect failed: password=${CANARY}`);
  const err = new LifeboatError('PUSH_INSTALL_FAILED', `remote said postgres://lifeboat:${CANARY}@db/x`, {
    cause: inner,
    details: { stderrTail: `token: ${CANARY}`, secret: 'x' },
  });
  const out = redact(err) as Record<string, unknown>;
  const text = serialised(out);
  assert.ok(!text.includes(CANARY), text);
  assert.equal(out['code'], 'PUSH_INSTALL_FAILED');
  assert.match(String(out['message']), /postgres:\/\/lifeboat:\[REDACTED\]@db\/x/);
  assert.match(text, /connect failed: password=\[REDACTED\]/);
});

test('secrets in free text are masked by shape', () => {
  for (const line of [
    `password=${CANARY}`,
    `PASSWORD: "${CANARY}"`,
    `Authorization: Basic ${CANARY}`,
    `https://user:${CANARY}@example.invalid/path`,
    `AccountName=a;AccountKey=${CANARY};EndpointSuffix=core`,
    `?sv=2024&sig=${CANARY}&se=1`,
    `key follows\n${PEM}\nend`,
  ]) {
    const out = redact(line);
    assert.ok(!out.includes(CANARY) && !out.includes('b3BlbnNzaC1rZXkt'), `${line} -> ${out}`);
  }
  assert.equal(redact('nothing secret here: 42 files'), 'nothing secret here: 42 files');
});

test('cycles, buffers and odd values do not break redaction', () => {
  const a: Record<string, unknown> = { name: 'a', password: CANARY };
  a['self'] = a;
  const out = redact({ a, buf: Buffer.from(CANARY), when: new Date(0), fn: () => 1, big: 1n }) as Record<string, unknown>;
  assert.ok(!serialised({ ...out, big: undefined }).includes(CANARY));
  assert.equal((out['a'] as Record<string, unknown>)['self'], '[Circular]');
  assert.equal(out['buf'], `[${CANARY.length} bytes]`);
  // The same object twice (not a cycle) is kept both times.
  const shared = { v: 1 };
  assert.deepEqual(redact({ x: shared, y: shared }), { x: { v: 1 }, y: { v: 1 } });
});
