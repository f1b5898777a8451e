/**
 * "Enable protection" push-installs for real: a vault (startVaultServer with the
 * push-install port override) against a real OpenSSH server on 127.0.0.1, driven
 * through the API. First install accepts and pins the host key; a changed host key
 * fails with HOST_KEY_MISMATCH; a wrong password fails with SSH_AUTH_FAILED and the
 * password shows nowhere; a root key install works.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VaultServer } from '../../../src/vault/server.js';
import { agentInstallSettingKey, hostKeySettingKey, type StoredHostKey } from '../../../src/vault/jobs/push-installer.js';
import { makeTempDir } from '../../helpers/env.js';
import { startSshd, type TestSshd } from '../../helpers/sshd.js';
import { client, seedBasics, start, waitFor } from '../replication/harness.js';

type Step = { name: string; state: string; error: string | null; progressPercent: number };

describe('enable protection: push install from the job', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let sshd1: TestSshd;
  let sshd2: TestSshd;
  before(async () => {
    tmp = makeTempDir('enable-push');
    sshd1 = await startSshd();
    sshd2 = await startSshd(); // the same "machine" after a reinstall: another host key
  });
  after(async () => {
    await sshd1?.stop();
    await sshd2?.stop();
    tmp?.cleanup();
  });

  const vaultFor = (sshd: TestSshd, dataDir: string): Promise<VaultServer> =>
    start(dataDir, {
      jobs: { pollIntervalMs: 50 },
      alertIntervalMs: 100,
      pushInstall: {
        port: sshd.port,
        remoteDir: join(sshd.user.home, 'opt', 'lifeboat'),
        stateDir: join(sshd.user.home, 'state'),
        connectTimeoutMs: 10_000,
        timeoutMs: 60_000,
      },
    });

  async function endedJob(call: ReturnType<typeof client>['call'], token: string, id: string): Promise<Record<string, unknown>> {
    return waitFor(
      `job ${id} to end`,
      async () => {
        const j = await call('GET', `/api/v1/jobs/${id}`, token);
        return ['succeeded', 'failed', 'cancelled'].includes(String(j.json.state)) ? j.json : undefined;
      },
      90_000,
    );
  }

  it('installs, pins the host key, refuses a changed key, a wrong password and never shows it', async () => {
    const dataDir = join(tmp.path, 'vault');
    const wrongPassword = `Wrong-${sshd1.user.password}-canary`;
    let server = await vaultFor(sshd1, dataDir);
    const admin = server.initialAdminToken!;
    let api = client(server.url);
    const responses: string[] = [];
    try {
      const { vaultId, configServerId, policyId } = await seedBasics(server, admin, tmp.path);
      const addMachine = async (name: string): Promise<string> => {
        const m = await api.call('POST', '/api/v1/machines', admin, { configServerId, name, privateIp: '127.0.0.1', os: 'debian-12' });
        assert.equal(m.status, 201, m.text);
        assert.equal(m.json.supported, null, 'the kernel is not known before the install');
        return String(m.json.id);
      };
      const addAccount = async (name: string, body: Record<string, string>): Promise<string> => {
        const a = await api.call('POST', '/api/v1/accounts', admin, { configServerId, name, ...body });
        assert.equal(a.status, 201, a.text);
        return String(a.json.id);
      };
      const enable = async (machineId: string, accountId: string): Promise<{ itemId: string; jobId: string }> => {
        const e = await api.call('POST', '/api/v1/replication/enable', admin, { vaultId, policyId, configServerId, accountId, machines: [machineId] });
        assert.equal(e.status, 202, e.text);
        return { itemId: String((e.json.items as Record<string, unknown>[])[0]!.id), jobId: String((e.json.jobs as Record<string, unknown>[])[0]!.id) };
      };

      const web = await addMachine('web-1');
      const userAccount = await addAccount('user-pw', { username: sshd1.user.name, password: sshd1.user.password });

      // 1. First install: accept-new, files on the machine, fingerprint stored, kernel recorded.
      const first = await enable(web, userAccount);
      const job1 = await endedJob(api.call, admin, first.jobId);
      const steps1 = job1.steps as Step[];
      assert.equal(steps1[2]!.name, 'Install the mobility service');
      assert.equal(steps1[2]!.state, 'succeeded', JSON.stringify(steps1));
      assert.equal(steps1[2]!.progressPercent, 100);
      // The later steps have handlers (the agent starts replication; the item moves on): the job succeeds.
      assert.equal(job1.state, 'succeeded', JSON.stringify(job1));
      assert.equal((await api.call('GET', `/api/v1/items/${first.itemId}`, admin)).json.state, 'initial-replication');
      const remoteDir = join(sshd1.user.home, 'opt', 'lifeboat');
      for (const f of ['package.json', 'bin/lifeboat.js', 'dist/cli/main.js', 'agent.env']) assert.ok(existsSync(join(remoteDir, f)), `${f} was not installed`);
      const env = readFileSync(join(remoteDir, 'agent.env'), 'utf8');
      assert.match(env, new RegExp(`LIFEBOAT_VAULT_URL='${server.url}'`));
      assert.match(env, new RegExp(`LIFEBOAT_MACHINE_ID='${web}'`));
      assert.ok(!env.includes(sshd1.user.password));
      // The one-time enrollment token is in agent.env, readable by its owner only, and stored by the vault as a hash.
      const token = /^LIFEBOAT_ENROLLMENT_TOKEN='(lbe_[A-Za-z0-9_-]+)'$/m.exec(env)?.[1];
      assert.ok(token, env);
      assert.equal(statSync(join(remoteDir, 'agent.env')).mode & 0o777, 0o600);
      assert.equal((await server.repos.enrollmentTokens.list({ itemId: first.itemId })).length, 1);
      for (const text of api.responses) assert.ok(!text.includes(token), 'the enrollment token is never in a response');
      const marker = readFileSync(join(sshd1.user.home, 'state', 'agent-installed'), 'utf8');
      assert.match(marker, /^version=\d+\.\d+\.\d+/m);
      assert.match(marker, new RegExp(`^machineId=${web}$`, 'm'));
      assert.match(marker, /agent=started/);
      // The agent was started in the background with its pid and log in the state directory.
      assert.match(readFileSync(join(sshd1.user.home, 'state', 'agent.pid'), 'utf8'), /^\d+\n$/);
      assert.ok(existsSync(join(sshd1.user.home, 'state', 'agent.log')));
      const pinned = await server.repos.settings.get<StoredHostKey>(hostKeySettingKey(web));
      assert.equal(pinned?.sha256, sshd1.fingerprint);
      assert.ok(await server.repos.settings.get(agentInstallSettingKey(web)));
      const machine = await api.call('GET', `/api/v1/machines/${web}`, admin);
      assert.equal(machine.json.kernel, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());
      assert.equal(machine.json.supported, true, machine.text);

      // 2. A wrong password: SSH_AUTH_FAILED at the install step; the item stays 'enabling'; a job-failed alert.
      const db = await addMachine('db-1');
      const badAccount = await addAccount('user-wrong', { username: sshd1.user.name, password: wrongPassword });
      const bad = await enable(db, badAccount);
      const job2 = await endedJob(api.call, admin, bad.jobId);
      const steps2 = job2.steps as Step[];
      assert.equal(job2.state, 'failed');
      assert.deepEqual(steps2.map((s) => s.state), ['succeeded', 'succeeded', 'failed', 'cancelled', 'cancelled']);
      assert.match(String(steps2[2]!.error), /^SSH_AUTH_FAILED: .*refused the login/);
      assert.equal((await api.call('GET', `/api/v1/items/${bad.itemId}`, admin)).json.state, 'enabling');
      assert.equal(await server.repos.settings.get(hostKeySettingKey(db)), undefined, 'no key is pinned by a failed login');
      const alert = await waitFor('a job-failed alert', async () => {
        const list = await api.call('GET', '/api/v1/alerts?status=open', admin);
        return (list.json.items as Record<string, unknown>[]).find((a) => a.kind === 'job-failed' && a.subjectId === bad.jobId);
      });
      assert.match(String(alert.message), /SSH_AUTH_FAILED/);
      responses.push(...api.responses);
      await server.close();

      // 3. The machine's host key changed (another sshd; the vault restarts, its pin survives):
      // re-enabling web-1 fails with HOST_KEY_MISMATCH before any credential is sent.
      server = await vaultFor(sshd2, dataDir);
      api = client(server.url);
      await server.repos.items.delete(first.itemId); // "disable replication" is a later milestone
      const userAccount2 = await addAccount('user2-pw', { username: sshd2.user.name, password: sshd2.user.password });
      const again = await enable(web, userAccount2);
      const job3 = await endedJob(api.call, admin, again.jobId);
      const steps3 = job3.steps as Step[];
      assert.equal(job3.state, 'failed');
      assert.equal(steps3[2]!.state, 'failed');
      assert.match(String(steps3[2]!.error), /^HOST_KEY_MISMATCH: /);
      assert.ok(String(steps3[2]!.error).includes(sshd2.fingerprint) && String(steps3[2]!.error).includes(sshd1.fingerprint));
      assert.equal((await server.repos.settings.get<StoredHostKey>(hostKeySettingKey(web)))?.sha256, sshd1.fingerprint, 'the pin is kept');
      assert.ok(!existsSync(join(sshd2.user.home, 'opt', 'lifeboat')), 'nothing was written');

      // 4. Root with a key, on a machine seen for the first time: accept-new, installed.
      const app = await addMachine('app-1');
      const rootAccount = await addAccount('root-key', { username: 'root', privateKey: sshd2.rootKey });
      const rooted = await enable(app, rootAccount);
      const job4 = await endedJob(api.call, admin, rooted.jobId);
      assert.equal((job4.steps as Step[])[2]!.state, 'succeeded', JSON.stringify(job4.steps));
      assert.equal((await server.repos.settings.get<StoredHostKey>(hostKeySettingKey(app)))?.sha256, sshd2.fingerprint);
      assert.ok(existsSync(join(sshd2.user.home, 'opt', 'lifeboat', 'agent.env')));

      // The wrong password and the real ones appear in no job, alert, response, sshd log or database file.
      await api.call('GET', '/api/v1/jobs', admin);
      await api.call('GET', '/api/v1/alerts?status=all', admin);
      await api.call('GET', '/api/v1/accounts', admin);
      responses.push(...api.responses);
    } finally {
      await server.close();
    }
    const secrets = [wrongPassword, sshd1.user.password, sshd2.user.password, sshd2.rootKey.split('\n')[1]!];
    const texts = [...responses, sshd1.log(), sshd2.log(), ...filesUnder(dataDir).map((f) => readFileSync(f, 'latin1'))];
    for (const secret of secrets) {
      for (const text of texts) assert.ok(!text.includes(secret), `a secret shows in: ${text.slice(0, 200)}`);
    }
  });
});

/** Every file under `dir` (the vault's data directory holds the database, the key and pki/). */
function filesUnder(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).map((f) => join(dir, f)).filter((f) => statSync(f).isFile());
}
