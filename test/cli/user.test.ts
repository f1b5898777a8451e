/**
 * `lifeboat user list|create|set-password` against a real `lifeboat server`: a user
 * made by the CLI signs in to the portal's API with the password set from a file or
 * from standard input; an unknown name and a short password fail with their codes'
 * exit statuses; the password never appears in the CLI's output. And `lifeboat server`
 * names the portal's URL and how to set its password.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES } from '../../src/core/errors.js';
import { makeTempDir } from '../helpers/env.js';
import { BIN, lifeboatServe, stop, type CliResult } from '../helpers/cli.js';

const PASSWORD = 'a long portal password 1';
const SECOND_PASSWORD = 'another portal password 2';

describe('lifeboat user', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: Awaited<ReturnType<typeof lifeboatServe>>;
  let url: string;
  let env: Record<string, string>;
  const outputs: CliResult[] = [];

  const cli = (args: string[], input?: string): CliResult => {
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, ...(input === undefined ? {} : { input }) });
    if (r.error) throw r.error;
    const result = { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) as Record<string, unknown> };
    outputs.push(result);
    return result;
  };
  const signIn = (name: string, password: string) =>
    fetch(`${url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, password }) });

  before(async () => {
    tmp = makeTempDir('cli-user');
    server = await lifeboatServe(['server', '--data-dir', join(tmp.path, 'data'), '--listen', '127.0.0.1:0', '--no-process-server', '--compute', 'export', '--json'], {});
    url = String(server.json.url);
    env = { LIFEBOAT_CONFIG_DIR: join(tmp.path, 'config'), LIFEBOAT_SERVER: url, LIFEBOAT_TOKEN: String(server.json.adminToken), LIFEBOAT_PROFILE: '' };
  });
  after(async () => {
    await stop(server.child);
    for (const r of outputs) {
      for (const p of [PASSWORD, SECOND_PASSWORD]) assert.ok(!r.stdout.includes(p) && !r.stderr.includes(p), `a password in the output: ${r.stdout} ${r.stderr}`);
    }
    tmp.cleanup();
  });

  it('lifeboat server --json names the portal', () => {
    assert.equal(server.json.portal, `${url}/`);
  });

  it('creates and lists users', () => {
    const created = cli(['user', 'create', 'alice', '--role', 'operator', '--json']);
    assert.equal(created.status, 0, created.stderr);
    assert.equal(created.json().role, 'operator');
    const list = cli(['user', 'list', '--json']);
    assert.equal(list.status, 0, list.stderr);
    assert.deepEqual((list.json() as unknown as { name: string; role: string }[]).map((u) => [u.name, u.role]), [
      ['admin', 'owner'],
      ['alice', 'operator'],
    ]);
    const table = cli(['user', 'list']);
    assert.match(table.stdout, /alice\s+operator/);
    const badRole = cli(['user', 'create', 'bob', '--role', 'king']);
    assert.equal(badRole.status, ERROR_CODES.USAGE.exitCode, badRole.stderr);
  });

  it('sets a password from a file or from standard input; the user signs in with it', async () => {
    assert.equal((await signIn('alice', PASSWORD)).status, 401, 'no password yet');
    const file = join(tmp.path, 'password.txt');
    writeFileSync(file, `${PASSWORD}\nignored second line\n`, { mode: 0o600 });
    const set = cli(['user', 'set-password', 'alice', '--password-file', file]);
    assert.equal(set.status, 0, set.stderr);
    assert.match(set.stdout, /set the password of alice/);
    assert.equal((await signIn('alice', PASSWORD)).status, 201);

    const piped = cli(['user', 'set-password', 'alice', '--json'], `${SECOND_PASSWORD}\n`);
    assert.equal(piped.status, 0, piped.stderr);
    assert.deepEqual(piped.json(), { id: piped.json().id, name: 'alice', passwordSet: true });
    assert.equal((await signIn('alice', PASSWORD)).status, 401);
    assert.equal((await signIn('alice', SECOND_PASSWORD)).status, 201);
  });

  it('an unknown user, a short password and an empty input fail with their exit statuses', () => {
    const unknown = cli(['user', 'set-password', 'nobody'], `${PASSWORD}\n`);
    assert.equal(unknown.status, ERROR_CODES.NOT_FOUND.exitCode, unknown.stderr);
    assert.match(unknown.stderr, /no user named nobody/);
    const short = cli(['user', 'set-password', 'alice'], 'short\n');
    assert.equal(short.status, ERROR_CODES.VALIDATION.exitCode, short.stderr);
    const empty = cli(['user', 'set-password', 'alice'], '');
    assert.equal(empty.status, ERROR_CODES.USAGE.exitCode, empty.stderr);
    assert.match(empty.stderr, /no password on standard input/);
  });

  it('lifeboat server prints the portal URL and the hint to set its password', async () => {
    const child = spawn(process.execPath, [BIN, 'server', '--data-dir', join(tmp.path, 'data2'), '--listen', '127.0.0.1:0', '--no-process-server', '--compute', 'export'], {
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const out = await new Promise<string>((resolve, reject) => {
        let text = '';
        child.stdout.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.includes('set a password for the portal')) resolve(text);
        });
        child.on('exit', (code) => reject(new Error(`server exited ${code}: ${text}`)));
      });
      assert.match(out, /^portal: http:\/\/127\.0\.0\.1:\d+\/$/m);
      assert.match(out, /^set a password for the portal: lifeboat user set-password admin$/m);
    } finally {
      await stop(child);
    }
  });
});
