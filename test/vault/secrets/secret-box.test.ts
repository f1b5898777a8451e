import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isLifeboatError } from '../../../src/core/errors.js';
import { SecretBox, SEALED_PREFIX, loadOrCreateVaultKey } from '../../../src/vault/secrets/secret-box.js';
import { makeTempDir } from '../../helpers/env.js';

const PASSWORD = 'canary-Pa55word-7f3e91';

const unreadable = (err: unknown): boolean => isLifeboatError(err, 'SECRET_UNREADABLE') && !String(err.message).includes(PASSWORD);

test('a sealed secret opens again with the same key and context, and does not show its plaintext', () => {
  const box = new SecretBox(SecretBox.generateKey());
  const sealed = box.seal(PASSWORD, 'push-account:1');
  assert.ok(sealed.startsWith(SEALED_PREFIX));
  assert.ok(!sealed.includes(PASSWORD));
  assert.equal(box.open(sealed, 'push-account:1'), PASSWORD);
  // Random nonces: the same secret never seals to the same text twice.
  assert.notEqual(box.seal(PASSWORD, 'push-account:1'), sealed);
  const pem = '-----BEGIN OPENSSH PRIVATE KEY-----\nüñí\n-----END OPENSSH PRIVATE KEY-----\n';
  assert.equal(box.open(box.seal(pem, 'push-account:2'), 'push-account:2'), pem);
  assert.equal(box.open(box.seal('', 'storage:1'), 'storage:1'), '');
});

test('another vault key cannot open a sealed secret', () => {
  const sealed = new SecretBox(SecretBox.generateKey()).seal(PASSWORD, 'push-account:1');
  assert.throws(() => new SecretBox(SecretBox.generateKey()).open(sealed, 'push-account:1'), unreadable);
});

test('a sealed secret moved to another context does not open', () => {
  const box = new SecretBox(SecretBox.generateKey());
  const sealed = box.seal(PASSWORD, 'push-account:1');
  assert.throws(() => box.open(sealed, 'push-account:2'), unreadable);
  assert.throws(() => box.open(sealed, 'storage:1'), unreadable);
});

test('any flipped byte, truncation or foreign text is refused', () => {
  const box = new SecretBox(SecretBox.generateKey());
  const sealed = box.seal(PASSWORD, 'ctx');
  const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64');
  for (let i = 0; i < raw.length; i++) {
    const copy = Buffer.from(raw);
    copy[i] = (copy[i] ?? 0) ^ 0x01;
    assert.throws(() => box.open(SEALED_PREFIX + copy.toString('base64'), 'ctx'), unreadable, `byte ${i}`);
  }
  assert.throws(() => box.open(SEALED_PREFIX + raw.subarray(0, raw.length - 1).toString('base64'), 'ctx'), unreadable);
  assert.throws(() => box.open(SEALED_PREFIX + raw.subarray(0, 5).toString('base64'), 'ctx'), unreadable);
  assert.throws(() => box.open(PASSWORD, 'ctx'), unreadable);
  assert.throws(() => box.open('lbs9:' + raw.toString('base64'), 'ctx'), unreadable);
  assert.throws(() => box.open(SEALED_PREFIX + '!!!', 'ctx'), unreadable);
});

test('a SecretBox refuses a key of the wrong size', () => {
  assert.throws(() => new SecretBox(Buffer.alloc(16)), (err) => isLifeboatError(err, 'CONFIG_INVALID'));
});

test('the vault key file is created with mode 0600 and read back unchanged', async () => {
  const tmp = makeTempDir('vault-key');
  try {
    const path = join(tmp.path, 'data', 'vault.key');
    const oldUmask = process.umask(0);
    let key: Buffer;
    try {
      key = await loadOrCreateVaultKey(path);
    } finally {
      process.umask(oldUmask);
    }
    assert.equal(key.length, 32);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(join(tmp.path, 'data')).mode & 0o777, 0o700);
    assert.deepEqual(await loadOrCreateVaultKey(path), key);
    const sealed = new SecretBox(key).seal(PASSWORD, 'push-account:1');
    assert.equal(new SecretBox(await loadOrCreateVaultKey(path)).open(sealed, 'push-account:1'), PASSWORD);
    assert.ok(!readFileSync(path, 'utf8').includes(PASSWORD));
  } finally {
    tmp.cleanup();
  }
});

test('concurrent first starts agree on one vault key', async () => {
  const tmp = makeTempDir('vault-key');
  try {
    const path = join(tmp.path, 'vault.key');
    const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateVaultKey(path)));
    for (const key of keys) assert.deepEqual(key, keys[0]);
  } finally {
    tmp.cleanup();
  }
});

test('a vault key file readable by others or not a key is refused, not used', async () => {
  const tmp = makeTempDir('vault-key');
  try {
    const path = join(tmp.path, 'vault.key');
    await loadOrCreateVaultKey(path);
    chmodSync(path, 0o644);
    await assert.rejects(loadOrCreateVaultKey(path), (err) => isLifeboatError(err, 'CONFIG_INVALID') && /chmod 600/.test(err.message));
    const junk = join(tmp.path, 'junk.key');
    writeFileSync(junk, 'hello\n', { mode: 0o600 });
    await assert.rejects(loadOrCreateVaultKey(junk), (err) => isLifeboatError(err, 'CONFIG_INVALID'));
  } finally {
    tmp.cleanup();
  }
});
