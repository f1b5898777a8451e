import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isLifeboatError, type LifeboatError } from '../../../src/core/errors.js';
import { pushInstall, type PushInstallOptions, type PushInstallStep } from '../../../src/vault/push-install/push-install.js';
import { makeTempDir } from '../../helpers/env.js';
import { closedPort, startSshd, type TestSshd } from '../../helpers/sshd.js';

let sshd: TestSshd;
let bundle: { path: string; cleanup: () => void };

before(async () => {
  sshd = await startSshd();
  bundle = makeTempDir('agent-bundle');
  chmodSync(bundle.path, 0o755);
  mkdirSync(join(bundle.path, 'bin'), { mode: 0o755 });
  mkdirSync(join(bundle.path, 'lib'), { mode: 0o750 });
  // The "agent": writes a marker with its arguments, mode 0640, into the directory it is given.
  writeFileSync(
    join(bundle.path, 'bin', 'lifeboat'),
    '#!/bin/sh\nset -e\numask 027\nprintf "agent started: %s\\n" "$*" > "$2/marker"\n',
    { mode: 0o755 },
  );
  chmodSync(join(bundle.path, 'bin', 'lifeboat'), 0o755);
  writeFileSync(join(bundle.path, 'lib', 'agent.js'), 'export const agent = 1;\n'.repeat(20_000), { mode: 0o644 });
  writeFileSync(join(bundle.path, 'VERSION'), '0.1.0\n', { mode: 0o644 });
  writeFileSync(join(bundle.path, 'lib', 'secret.conf'), 'private\n', { mode: 0o600 });
  chmodSync(join(bundle.path, 'lib', 'secret.conf'), 0o600);
});

after(async () => {
  await sshd?.stop();
  bundle?.cleanup();
});

/** Options for the password user, installing below its home. */
function asUser(overrides: Partial<PushInstallOptions> = {}): PushInstallOptions {
  return {
    host: sshd.host,
    port: sshd.port,
    username: sshd.user.name,
    auth: { password: sshd.user.password },
    hostKey: { sha256: sshd.fingerprint },
    bundleDir: bundle.path,
    remoteDir: join(sshd.user.home, 'opt', 'lifeboat'),
    connectTimeoutMs: 10_000,
    timeoutMs: 60_000,
    ...overrides,
  };
}

const failsWith = (code: LifeboatError['code'], also: (err: LifeboatError) => boolean = () => true) => (err: unknown) =>
  isLifeboatError(err, code) && also(err);

/** Every text an error could show: message, details, causes, stack, JSON. */
function everything(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && depth < 10; depth++) {
    parts.push(String(e));
    if (e instanceof Error) {
      parts.push(e.stack ?? '', JSON.stringify(e), JSON.stringify((e as Partial<LifeboatError>).details ?? {}));
      e = e.cause;
    } else {
      parts.push(JSON.stringify(e));
      e = undefined;
    }
  }
  return parts.join('\n');
}

test('push install with a password copies the bundle with its modes, checks it and runs the start command', async () => {
  const steps: PushInstallStep[] = [];
  const percents: number[] = [];
  const remoteDir = join(sshd.user.home, 'opt', 'lifeboat');
  const result = await pushInstall(
    asUser({
      startCommand: `./bin/lifeboat agent ${remoteDir} --vault https://vault.invalid`,
      onProgress: (step, percent) => {
        if (steps.at(-1) !== step) steps.push(step);
        percents.push(percent);
      },
    }),
  );
  assert.equal(result.kernel, execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim());
  assert.equal(result.arch, execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim());
  const osRelease = readFileSync('/etc/os-release', 'utf8');
  assert.equal(result.os.id, /^ID=(.*)$/m.exec(osRelease)?.[1]?.replace(/"/g, ''));
  assert.equal(result.fingerprint, sshd.fingerprint);
  assert.equal(result.filesCopied, 4);
  assert.equal(result.bytesCopied, statSync(join(bundle.path, 'lib', 'agent.js')).size + statSync(join(bundle.path, 'bin', 'lifeboat')).size + 6 + 8);
  assert.deepEqual(steps, ['connect', 'probe', 'prepare', 'copy', 'verify', 'activate', 'start']);
  assert.deepEqual(percents, [...percents].sort((a, b) => a - b), 'progress never goes backwards');
  assert.equal(percents.at(-1), 100);

  for (const rel of ['bin/lifeboat', 'lib/agent.js', 'VERSION', 'lib/secret.conf']) {
    assert.deepEqual(readFileSync(join(remoteDir, rel)), readFileSync(join(bundle.path, rel)), rel);
    assert.equal(statSync(join(remoteDir, rel)).mode & 0o777, statSync(join(bundle.path, rel)).mode & 0o777, `${rel} mode`);
    assert.equal(statSync(join(remoteDir, rel)).uid, Number(execFileSync('id', ['-u', sshd.user.name], { encoding: 'utf8' })));
  }
  assert.equal(statSync(join(remoteDir, 'lib')).mode & 0o777, 0o750);
  const marker = join(remoteDir, 'marker');
  assert.equal(readFileSync(marker, 'utf8'), `agent started: agent ${remoteDir} --vault https://vault.invalid\n`);
  assert.equal(statSync(marker).mode & 0o777, 0o640);
  assert.ok(!existsSync(`${remoteDir}.lifeboat-staging`) && !existsSync(`${remoteDir}.lifeboat-old`));
});

test('root logs in with a key (plain and passphrase-protected) and installs; re-running is idempotent', async () => {
  const remoteDir = join(sshd.dir, 'root-install', 'lifeboat');
  const options = asUser({
    username: 'root',
    auth: { privateKey: sshd.rootKey },
    remoteDir,
    startCommand: `./bin/lifeboat agent ${remoteDir}`,
  });
  const first = await pushInstall(options);
  assert.equal(first.filesCopied, 4);
  assert.equal(statSync(join(remoteDir, 'marker')).uid, 0);
  const listing = (): string => execFileSync('find', [join(sshd.dir, 'root-install'), '-printf', '%P %m %s\\n'], { encoding: 'utf8' }).split('\n').sort().join('\n');
  const before = listing();
  // Again, with the encrypted key: the same tree, nothing left over.
  const second = await pushInstall({ ...options, auth: sshd.rootKeyEncrypted });
  assert.deepEqual({ ...second }, { ...first });
  assert.equal(listing(), before);
  assert.equal(readFileSync(join(remoteDir, 'marker'), 'utf8'), `agent started: agent ${remoteDir}\n`);
});

test('a stale staging directory from an interrupted run is replaced', async () => {
  const remoteDir = join(sshd.user.home, 'opt', 'again');
  mkdirSync(`${remoteDir}.lifeboat-staging/bin`, { recursive: true });
  writeFileSync(`${remoteDir}.lifeboat-staging/bin/junk`, 'junk');
  execFileSync('chown', ['-R', sshd.user.name, join(sshd.user.home, 'opt')]);
  await pushInstall(asUser({ remoteDir }));
  assert.ok(!existsSync(join(remoteDir, 'bin', 'junk')));
  assert.ok(!existsSync(`${remoteDir}.lifeboat-staging`));
});

test('a wrong password fails quickly with SSH_AUTH_FAILED and never shows the password', async () => {
  const canary = 'canary-WrongPw-9c1e7b';
  const started = Date.now();
  await assert.rejects(pushInstall(asUser({ auth: { password: canary } })), (err) => {
    assert.ok(isLifeboatError(err, 'SSH_AUTH_FAILED'), String(err));
    assert.ok(!everything(err).includes(canary));
    assert.match(err.message, new RegExp(sshd.user.name));
    return true;
  });
  assert.ok(Date.now() - started < 8_000, `took ${Date.now() - started} ms`);
});

test('a key no account accepts fails with SSH_AUTH_FAILED without quoting the key', async () => {
  await assert.rejects(pushInstall(asUser({ username: 'root', auth: { privateKey: sshd.strangerKey } })), (err) => {
    assert.ok(isLifeboatError(err, 'SSH_AUTH_FAILED'), String(err));
    const body = sshd.strangerKey.split('\n')[1] ?? '';
    assert.ok(body.length > 20 && !everything(err).includes(body));
    return true;
  });
  await assert.rejects(
    pushInstall(asUser({ username: 'root', auth: { privateKey: sshd.rootKeyEncrypted.privateKey, passphrase: 'canary-WrongPassphrase' } })),
    (err) => isLifeboatError(err, 'SSH_AUTH_FAILED') && !everything(err).includes('canary-WrongPassphrase'),
  );
});

test('a closed port fails with HOST_UNREACHABLE', async () => {
  const port = await closedPort();
  await assert.rejects(pushInstall(asUser({ port })), failsWith('HOST_UNREACHABLE', (e) => e.retryable && /ECONNREFUSED/.test(e.message)));
});

test('a port that accepts TCP but never speaks SSH fails with HOST_UNREACHABLE after the connect timeout', async () => {
  const { createServer } = await import('node:net');
  const silent = createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const address = silent.address();
  try {
    const started = Date.now();
    await assert.rejects(
      pushInstall(asUser({ port: typeof address === 'object' && address ? address.port : 0, connectTimeoutMs: 1_000 })),
      failsWith('HOST_UNREACHABLE'),
    );
    assert.ok(Date.now() - started < 5_000);
  } finally {
    silent.close();
  }
});

test('a host key other than the pinned one is refused before anything is sent', async () => {
  const remoteDir = join(sshd.user.home, 'opt', 'pinned');
  const logins = (): number => (sshd.log().match(/Accepted (password|publickey) for /g) ?? []).length;
  const loginsBefore = logins();
  assert.ok(loginsBefore > 0, 'the server logs logins (earlier tests logged in)');
  const wrong = 'SHA256:' + Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '');
  await assert.rejects(pushInstall(asUser({ remoteDir, hostKey: { sha256: wrong } })), (err) => {
    assert.ok(isLifeboatError(err, 'HOST_KEY_MISMATCH'), String(err));
    assert.equal(err.details['presented'], sshd.fingerprint);
    assert.ok(!everything(err).includes(sshd.user.password));
    return true;
  });
  assert.ok(!existsSync(`${remoteDir}.lifeboat-staging`) && !existsSync(remoteDir));
  assert.equal(logins(), loginsBefore, 'no login happened: the password never left this process');
  // accept-new returns the fingerprint to pin.
  const result = await pushInstall(asUser({ remoteDir, hostKey: 'accept-new' }));
  assert.equal(result.fingerprint, sshd.fingerprint);
});

test('a failing start command fails with PUSH_INSTALL_FAILED naming the step, exit status and stderr, with secrets redacted', async () => {
  const canary = sshd.user.password;
  await assert.rejects(
    pushInstall(asUser({ startCommand: `echo "agent: cannot reach vault (password=${canary})" >&2; echo "${canary}" >&2; exit 3` })),
    (err) => {
      assert.ok(isLifeboatError(err, 'PUSH_INSTALL_FAILED'), String(err));
      assert.equal(err.details['step'], 'start');
      assert.equal(err.details['exitCode'], 3);
      assert.match(err.message, /step "start".*status 3.*cannot reach vault/s);
      assert.ok(!everything(err).includes(canary), everything(err));
      assert.equal(err.retryable, false);
      return true;
    },
  );
});

test('a start command that never returns is stopped by the timeout', async () => {
  await assert.rejects(
    pushInstall(asUser({ startCommand: 'sleep 30', timeoutMs: 3_000 })),
    failsWith('PUSH_INSTALL_FAILED', (e) => e.details['step'] === 'start' && e.retryable && /within 3000 ms/.test(e.message)),
  );
});

test('a remote directory the account cannot write fails at the prepare step', async () => {
  await assert.rejects(
    pushInstall(asUser({ remoteDir: '/root/lifeboat-not-yours' })),
    failsWith('PUSH_INSTALL_FAILED', (e) => e.details['step'] === 'prepare' && typeof e.details['exitCode'] === 'number'),
  );
});
