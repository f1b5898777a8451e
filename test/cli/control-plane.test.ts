/**
 * The control-plane CLI against a real `lifeboat server`: login saves a 0600
 * profile, the seed's steps run as commands with human tables and --json, a
 * wrong token exits with UNAUTHENTICATED's status and a readable message, a
 * stopped server is a clear connection error naming it, and the token never
 * appears in any output.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES } from '../../src/core/errors.js';
import { makeTempDir } from '../helpers/env.js';
import { BIN, lifeboat, lifeboatServe, stop, type CliResult } from '../helpers/cli.js';

describe('control-plane CLI', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: Awaited<ReturnType<typeof lifeboatServe>>;
  let url: string;
  let token: string;
  let configDir: string;
  const outputs: CliResult[] = [];

  /** Runs the CLI with its own config dir and no server or token in the environment. */
  const cli = (args: string[], env: Record<string, string> = {}): CliResult => {
    const r = lifeboat(args, { LIFEBOAT_CONFIG_DIR: configDir, LIFEBOAT_SERVER: '', LIFEBOAT_TOKEN: '', LIFEBOAT_PROFILE: '', ...env });
    outputs.push(r);
    return r;
  };
  const ok = (args: string[], env: Record<string, string> = {}): CliResult => {
    const r = cli(args, env);
    assert.equal(r.status, 0, `lifeboat ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r;
  };

  before(async () => {
    tmp = makeTempDir('control-plane');
    configDir = join(tmp.path, 'config');
    server = await lifeboatServe(['server', '--data-dir', join(tmp.path, 'data'), '--listen', '127.0.0.1:0', '--json'], {});
    url = String(server.json.url);
    token = String(server.json.adminToken);
  });
  after(async () => {
    await stop(server.child);
    // The token must not appear in anything the CLI printed, whatever happened.
    for (const r of outputs) {
      assert.ok(!r.stdout.includes(token), `token in stdout: ${r.stdout}`);
      assert.ok(!r.stderr.includes(token), `token in stderr: ${r.stderr}`);
    }
    tmp.cleanup();
  });

  it('logs in, saves a 0600 profile, and refuses commands without one', () => {
    const none = cli(['vault', 'list']);
    assert.equal(none.status, ERROR_CODES.UNAUTHENTICATED.exitCode);
    assert.match(none.stderr, /no server given and no saved profile/);
    assert.match(none.stderr, /Try: lifeboat login/);

    const login = ok(['login', '--server', url, '--token', token]);
    assert.match(login.stdout, new RegExp(`logged in to ${url.replace(/[.]/g, '\\.')} as admin|logged in to .* \\(owner\\)`));
    const path = join(configDir, 'profile.json');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const saved = JSON.parse(readFileSync(path, 'utf8')) as { server: string; token: string };
    assert.equal(saved.server, url);
    assert.equal(saved.token, token);

    const named = ok(['login', '--server', url, '--profile', 'second', '--json'], { LIFEBOAT_TOKEN: token });
    assert.equal((named.json() as { server: string }).server, url);
    assert.equal(statSync(join(configDir, 'profile-second.json')).mode & 0o777, 0o600);
    ok(['vault', 'list', '--profile', 'second']);
    const out = ok(['logout', '--profile', 'second']);
    assert.match(out.stdout, /removed the profile/);
    assert.equal(cli(['vault', 'list', '--profile', 'second']).status, ERROR_CODES.UNAUTHENTICATED.exitCode);
  });

  it('creates and lists vaults and policies, as tables and as JSON', () => {
    const store = `file://${join(tmp.path, 'store')}`;
    const created = ok(['vault', 'create', 'recovery-west', '--location', 'west', '--store', store, '--recovery-network', 'dr-net', '--json']).json();
    assert.equal(created.name, 'recovery-west');
    assert.equal(created.recoveryNetwork, 'dr-net');
    const human = ok(['vault', 'list']);
    assert.match(human.stdout, /^ID\s+NAME\s+LOCATION\s+STORE/m);
    assert.match(human.stdout, new RegExp(`${String(created.id)}\\s+recovery-west\\s+west\\s+${store.replace(/[.]/g, '\\.')}`));
    const listed = JSON.parse(ok(['vault', 'list', '--json']).stdout) as { id: string }[];
    assert.deepEqual(
      listed.map((v) => v.id),
      [created.id],
    );

    // By vault name; durations in the operator's units.
    const made = ok(['policy', 'create', '--vault', 'recovery-west', 'gold', '--rpo-threshold', '15m', '--retention', '24h', '--app-consistent', '4h', '--crash-consistent', '5m']);
    assert.match(made.stdout, /created policy gold/);
    assert.match(made.stdout, /RPO threshold:\s+15m/);
    const policy = JSON.parse(ok(['policy', 'show', 'gold', '--json']).stdout) as Record<string, unknown>;
    assert.equal(policy.vaultId, created.id);
    assert.equal(policy.rpoThresholdSeconds, 900);
    assert.equal(policy.retentionHours, 24);
    assert.equal(policy.appConsistentFrequencyMinutes, 240);
    assert.equal(policy.crashConsistentFrequencySeconds, 300);
    ok(['policy', 'create', '--vault', String(created.id), 'silver', '--app-consistent', 'off']);
    const table = ok(['policy', 'list']).stdout;
    assert.match(table, /^ID\s+NAME\s+VAULT\s+RPO THRESHOLD/m);
    assert.match(table, /gold\s+\S+\s+15m\s+24h\s+4h\s+5m/);
    assert.match(table, /silver\s+\S+\s+\S+\s+\S+\s+off/);
    const shown = ok(['policy', 'show', String(policy.id)]).stdout;
    assert.match(shown, /name:\s+gold/);

    // The server's validation comes back with its code and the failing field.
    const bad = cli(['policy', 'create', '--vault', 'recovery-west', 'bad', '--retention', '99999h']);
    assert.equal(bad.status, ERROR_CODES.VALIDATION.exitCode);
    assert.match(bad.stderr, /VALIDATION: .*retentionHours/);
    const missing = cli(['policy', 'show', 'nope']);
    assert.equal(missing.status, ERROR_CODES.NOT_FOUND.exitCode);
    assert.match(missing.stderr, /no policy with the id or name nope/);
  });

  it('a wrong token exits with UNAUTHENTICATED and says so, with the request id in --json', () => {
    const wrong = 'lbt_nope_0000000000000000000000000000';
    const r = cli(['vault', 'list', '--server', url, '--token', wrong]);
    assert.equal(r.status, ERROR_CODES.UNAUTHENTICATED.exitCode);
    assert.match(r.stderr, /^lifeboat: UNAUTHENTICATED: .+/m);
    assert.match(r.stderr, /Try: lifeboat login/);
    assert.ok(!r.stderr.includes(wrong) && !r.stdout.includes(wrong));
    const j = cli(['policy', 'list', '--json'], { LIFEBOAT_SERVER: url, LIFEBOAT_TOKEN: wrong });
    const err = (j.json() as { error: { code: string; details: { requestId: string; status: number } } }).error;
    assert.equal(err.code, 'UNAUTHENTICATED');
    assert.equal(err.details.status, 401);
    assert.ok(err.details.requestId.length > 0);
    assert.ok(!j.stdout.includes(wrong));
    // login with a wrong token saves nothing
    assert.equal(cli(['login', '--server', url, '--token', wrong, '--profile', 'bad']).status, ERROR_CODES.UNAUTHENTICATED.exitCode);
    assert.throws(() => statSync(join(configDir, 'profile-bad.json')));
  });

  it('walks the seed steps 2-5 through the CLI', async () => {
    const docs = (await (await fetch(`${url}/api/docs`)).json()) as { paths: Record<string, unknown> };
    const has = (p: string) => p in docs.paths;

    const vault = ok(['vault', 'create', 'seed-vault', '--location', 'east', '--store', `file://${join(tmp.path, 'seed-store')}`, '--recovery-network', 'dr', '--json']).json();
    if (has('/api/v1/vaults/{id}/check')) {
      const check = ok(['vault', 'check', 'seed-vault']);
      assert.match(check.stdout, /store:\s+ok/);
    }
    for (const path of ['/api/v1/vaults/{id}/registration-keys', '/api/v1/config-servers/register']) assert.ok(has(path), `the API lacks ${path}`);

    const keyFile = join(tmp.path, 'vault.key');
    const key = ok(['registration-key', 'create', '--vault', 'seed-vault', '--out', keyFile]);
    assert.match(key.stdout, /written to/);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.match(readFileSync(keyFile, 'utf8'), /^lbrk1\./);
    assert.match(ok(['registration-key', 'create', '--vault', String(vault.id)]).stdout, /^lbrk1\.\S+\n$/);

    // Registration needs no token: the key is the credential.
    const credFile = join(tmp.path, 'cs.credential');
    const reg = ok(['config-server', 'register', '--key', keyFile, '--name', 'cs-1', '--address', '10.0.0.5', '--credential-out', credFile, '--server', url]);
    assert.match(reg.stdout, /registered configuration server cs-1/);
    assert.equal(statSync(credFile).mode & 0o777, 0o600);
    const forged = cli(['config-server', 'register', '--key', 'lbrk1.e30.AAAA', '--name', 'cs-x', '--address', '10.0.0.6', '--server', url]);
    assert.equal(forged.status, ERROR_CODES.REGISTRATION_KEY_INVALID.exitCode);
    assert.match(forged.stderr, /REGISTRATION_KEY_INVALID/);
    const servers = ok(['config-server', 'list']).stdout;
    assert.match(servers, /cs-1\s+\S+\s+10\.0\.0\.5/);
    ok(['config-server', 'refresh', 'cs-1']);

    ok(['policy', 'create', '--vault', 'seed-vault', 'seed-policy', '--rpo-threshold', '15m', '--retention', '24h', '--app-consistent', '4h']);
    for (const path of ['/api/v1/machines', '/api/v1/accounts']) assert.ok(has(path), `the API lacks ${path}`);
    const machine = ok(['machine', 'add', '--config-server', 'cs-1', 'web-1', '--ip', '10.0.0.10', '--os', 'debian-12', '--kernel', '6.1.0-18-amd64', '--json']).json();
    assert.equal(machine.privateIp, '10.0.0.10');
    assert.match(ok(['machine', 'list']).stdout, /web-1\s+10\.0\.0\.10\s+debian-12/);
    ok(['machine', 'check', 'web-1']);
    const passwordFile = join(tmp.path, 'root.password');
    writeFileSync(passwordFile, 'canary-root-password-9f3e\n', { mode: 0o600 });
    const account = ok(['account', 'add', '--config-server', 'cs-1', 'root-ssh', '--username', 'root', '--password-file', passwordFile]);
    assert.match(account.stdout, /added account root-ssh/);
    assert.ok(!account.stdout.includes('canary-root-password-9f3e'));

    for (const path of ['/api/v1/replication/enable', '/api/v1/jobs/{id}/events']) assert.ok(has(path), `the API lacks ${path}`);
    const enabled = ok(['replication', 'enable', '--vault', 'seed-vault', '--policy', 'seed-policy', '--config-server', 'cs-1', '--account', 'root-ssh', 'web-1', '--json']).json() as {
      items: { id: string }[];
      jobs: { id: string }[];
    };
    assert.equal(enabled.items.length, 1);
    const jobId = (enabled.jobs[0] as { id: string }).id;
    assert.match(ok(['item', 'list']).stdout, new RegExp((enabled.items[0] as { id: string }).id));
    ok(['item', 'show', (enabled.items[0] as { id: string }).id]);
    assert.match(ok(['job', 'list']).stdout, new RegExp(jobId));
    assert.match(ok(['job', 'show', jobId]).stdout, /Prerequisites check/);

    // Nothing reaches 10.0.0.10 here, so the job ends one way or another; watch follows it to the end.
    const watched = await runAsync(['job', 'watch', jobId], { LIFEBOAT_CONFIG_DIR: configDir });
    outputs.push(watched);
    assert.match(watched.stdout, /step 1\/\d+ Prerequisites check: /);
    assert.match(watched.stdout, /^state:\s+(succeeded|failed|cancelled)/m);
    const final = ok(['job', 'show', jobId, '--json']).json();
    if (final.state === 'succeeded') assert.equal(watched.status, 0);
    else {
      assert.equal(watched.status, ERROR_CODES.JOB_FAILED.exitCode);
      assert.match(watched.stderr, /JOB_FAILED: job .* failed/);
    }
    ok(['alert', 'list']);
  });

  it('a stopped server is a clear, retryable connection error naming the server', async () => {
    await stop(server.child);
    const r = cli(['vault', 'list']);
    assert.equal(r.status, ERROR_CODES.SERVER_UNREACHABLE.exitCode);
    assert.match(r.stderr, new RegExp(`SERVER_UNREACHABLE: cannot reach the vault server at ${url.replace(/[.]/g, '\\.')}: connection refused`));
    const j = cli(['vault', 'list', '--json']).json() as { error: { retryable: boolean } };
    assert.equal(j.error.retryable, true);
  });
});

/** Like `lifeboat` but without blocking the event loop (the server under test lives in another process, but watch can take a while). */
function runAsync(args: string[], env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, LIFEBOAT_SERVER: '', LIFEBOAT_TOKEN: '', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), 120_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, stdout, stderr, json: () => JSON.parse(stdout) as Record<string, unknown> });
    });
  });
}
