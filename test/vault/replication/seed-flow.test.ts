/**
 * Seed steps 1 and 5 against a real vault server (SQLite in a temp data dir):
 * machines with the supported-OS check, a push-install account whose password
 * never leaves the vault in clear, enable replication -> items and "Enable
 * protection" jobs with their steps, roles, job events, restart, alerts.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { JOB_KINDS, startJob } from '../../../src/core/jobs.js';
import { persistJob } from '../../../src/vault/jobs/job-store.js';
import { defaultStepHandlers } from '../../../src/vault/jobs/runner.js';
import { AlertEvaluator } from '../../../src/vault/services/alert-evaluator.js';
import { makeTempDir } from '../../helpers/env.js';
import { STORE_PASSPHRASE, client, gate, offsetClock, seedBasics, start, tokenFor, waitFor } from './harness.js';

const CANARY = 'Canary-P4ssw0rd-9f3b1c2e-never-in-clear';

describe('replication: seed steps 1 and 5', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  before(() => {
    tmp = makeTempDir('replication');
  });
  after(() => tmp.cleanup());

  it('machines -> account -> policy -> enable: items and jobs with steps; unsupported OS refused with its reason; the canary password stays sealed', async () => {
    const dataDir = join(tmp.path, 'seed');
    const clock = offsetClock();
    const server = await start(dataDir, { now: clock.now, jobs: { pollIntervalMs: 50 } });
    const admin = server.initialAdminToken!;
    const { call, responses } = client(server.url);
    try {
      const { vaultId, configServerId, policyId } = await seedBasics(server, admin, tmp.path);

      const web = await call('POST', '/api/v1/machines', admin, { configServerId, name: 'web-1', privateIp: '10.0.0.11', os: 'ubuntu-22.04', kernel: '5.15.0-91-generic' });
      assert.equal(web.status, 201, web.text);
      assert.equal(web.json.supported, true);
      const old = await call('POST', '/api/v1/machines', admin, { configServerId, name: 'old-1', privateIp: 'fd00::12', os: 'centos-7', kernel: '3.10.0' });
      assert.equal(old.status, 201, old.text);
      assert.equal(old.json.supported, false);
      assert.match(String(old.json.supportReason), /CentOS is not supported/);
      const badIp = await call('POST', '/api/v1/machines', admin, { configServerId, name: 'x-1', privateIp: '10.0.0.999', os: 'debian-12' });
      assert.equal(badIp.status, 400);
      assert.equal(badIp.json.code, 'VALIDATION');
      const recheck = await call('POST', `/api/v1/machines/${String(old.json.id)}/check`, admin, {});
      assert.equal(recheck.status, 200, recheck.text);
      assert.equal(recheck.json.supported, false);
      const listed = await call('GET', `/api/v1/machines?configServerId=${configServerId}`, admin);
      assert.equal((listed.json.items as unknown[]).length, 2);

      const account = await call('POST', '/api/v1/accounts', admin, { configServerId, name: 'root-push', username: 'root', password: CANARY });
      assert.equal(account.status, 201, account.text);
      assert.equal(account.json.kind, 'password');
      const both = await call('POST', '/api/v1/accounts', admin, { configServerId, name: 'both', username: 'root', password: 'a', privateKey: 'b' });
      assert.equal(both.status, 400);
      await call('GET', '/api/v1/accounts', admin);
      await call('GET', `/api/v1/accounts/${String(account.json.id)}`, admin);

      const base = { vaultId, policyId, configServerId, accountId: account.json.id };
      const refused = await call('POST', '/api/v1/replication/enable', admin, { ...base, machines: [web.json.id, old.json.id] });
      assert.equal(refused.status, 400, refused.text);
      assert.match(String(refused.json.detail ?? refused.text), /old-1 is not supported: CentOS is not supported/);
      assert.equal((await call('GET', '/api/v1/items', admin)).json.items instanceof Array, true);
      assert.equal(((await call('GET', '/api/v1/items', admin)).json.items as unknown[]).length, 0, 'an enable with one bad machine enables none');

      const enabled = await call('POST', '/api/v1/replication/enable', admin, {
        ...base,
        machines: [web.json.id],
        compute: [{ machineId: web.json.id, targetName: 'web-1-dr', size: 'medium', network: 'dr-net', ip: '192.168.50.11' }],
      });
      assert.equal(enabled.status, 202, enabled.text);
      const [item] = enabled.json.items as Record<string, unknown>[];
      const [job] = enabled.json.jobs as Record<string, unknown>[];
      assert.equal(item!.state, 'enabling');
      assert.equal(item!.generation, 1);
      assert.deepEqual(item!.compute, { targetName: 'web-1-dr', size: 'medium', network: 'dr-net', subnet: null, ip: '192.168.50.11' });
      assert.equal(job!.kind, 'enable-protection');
      assert.equal(job!.itemId, item!.id);
      assert.deepEqual(
        (job!.steps as { name: string }[]).map((s) => s.name),
        JOB_KINDS['enable-protection'].steps.map((s) => s.name),
      );
      const again = await call('POST', '/api/v1/replication/enable', admin, { ...base, machines: [web.json.id] });
      assert.equal(again.status, 409, again.text);
      assert.match(String(again.json.detail), /already protected/);

      const patched = await call('PATCH', `/api/v1/items/${String(item!.id)}/compute`, admin, { subnet: 'dr-subnet-a' });
      assert.equal(patched.status, 200, patched.text);
      assert.equal((patched.json.compute as Record<string, unknown>).subnet, 'dr-subnet-a');
      assert.equal((patched.json.compute as Record<string, unknown>).targetName, 'web-1-dr');
      const badPatch = await call('PATCH', `/api/v1/items/${String(item!.id)}/compute`, admin, { ip: 'nope' });
      assert.equal(badPatch.status, 400);

      // The runner takes the job; push install is pending in this milestone, and the job says so.
      const ended = await waitFor('the enable job to end', async () => {
        const j = await call('GET', `/api/v1/jobs/${String(job!.id)}`, admin);
        return ['succeeded', 'failed', 'cancelled'].includes(String(j.json.state)) ? j.json : undefined;
      });
      assert.equal(ended.state, 'failed');
      const steps = ended.steps as { name: string; state: string; error: string | null }[];
      assert.deepEqual(steps.map((s) => s.state), ['succeeded', 'succeeded', 'failed', 'cancelled', 'cancelled']);
      assert.match(String(steps[2]!.error), /push install is pending/);
      assert.equal(((await call('GET', `/api/v1/jobs?itemId=${String(item!.id)}&state=failed`, admin)).json.items as unknown[]).length, 1);
      assert.equal(((await call('GET', '/api/v1/items?state=enabling', admin)).json.items as unknown[]).length, 1);

      // The account's secret opens with the vault key and nowhere else shows in clear.
      const sealed = (await server.repos.pushAccounts.getEncryptedSecret(String(account.json.id))).toString('utf8');
      assert.match(sealed, /^lbs1:/);
      for (const text of responses) assert.ok(!text.includes(CANARY), `a response carries the canary: ${text.slice(0, 200)}`);
      const audit = JSON.stringify(await server.repos.auditLog.list());
      assert.ok(audit.includes('accounts.create'));
      assert.ok(!audit.includes(CANARY));
    } finally {
      await server.close();
    }
    for (const f of (readdirSync(dataDir, { recursive: true }) as string[]).map((n) => join(dataDir, n)).filter((n) => statSync(n).isFile())) {
      assert.ok(!readFileSync(f).includes(Buffer.from(CANARY)), `${f} holds the canary in clear`);
      assert.ok(!readFileSync(f).includes(Buffer.from(STORE_PASSPHRASE)), `${f} holds the store passphrase in clear`);
    }
  });

  it('roles: an operator may cancel a job but not configure; a reader may only read', async () => {
    const clock = offsetClock();
    const prereq = gate();
    const server = await start(join(tmp.path, 'roles'), {
      now: clock.now,
      jobs: { pollIntervalMs: 50, handlers: { 'enable-protection': { ...defaultStepHandlers()['enable-protection'], 'Prerequisites check': prereq.handler } } },
    });
    const admin = server.initialAdminToken!;
    const { call } = client(server.url);
    try {
      const operator = await tokenFor(server, 'operator', clock.now);
      const reader = await tokenFor(server, 'reader', clock.now);
      const { vaultId, configServerId, policyId } = await seedBasics(server, admin, tmp.path);
      const m = { configServerId, name: 'db-1', privateIp: '10.0.0.21', os: 'debian-12', kernel: '6.1.0-18-amd64' };
      assert.equal((await call('POST', '/api/v1/machines', operator, m)).status, 403);
      assert.equal((await call('POST', '/api/v1/machines', reader, m)).status, 403);
      const machine = await call('POST', '/api/v1/machines', admin, m);
      assert.equal((await call('GET', '/api/v1/machines', reader)).status, 200);
      const acc = { configServerId, name: 'root', username: 'root', password: 'pw' };
      assert.equal((await call('POST', '/api/v1/accounts', operator, acc)).status, 403);
      const account = await call('POST', '/api/v1/accounts', admin, acc);
      const body = { vaultId, policyId, configServerId, accountId: account.json.id, machines: [machine.json.id] };
      const denied = await call('POST', '/api/v1/replication/enable', operator, body);
      assert.equal(denied.status, 403);
      assert.equal(denied.json.code, 'FORBIDDEN');
      const enabled = await call('POST', '/api/v1/replication/enable', admin, body);
      const jobId = String((enabled.json.jobs as { id: string }[])[0]!.id);
      await prereq.entered;
      assert.equal((await call('POST', `/api/v1/jobs/${jobId}/cancel`, reader, {})).status, 403);
      assert.equal((await call('PATCH', `/api/v1/items/${String((enabled.json.items as { id: string }[])[0]!.id)}/compute`, operator, { size: 'large' })).status, 403);
      const cancelled = await call('POST', `/api/v1/jobs/${jobId}/cancel`, operator, {});
      assert.equal(cancelled.status, 200, cancelled.text);
      assert.equal(cancelled.json.state, 'cancelled');
      prereq.release();
      await new Promise((r) => setTimeout(r, 200));
      const after = await call('GET', `/api/v1/jobs/${jobId}`, reader);
      assert.equal(after.json.state, 'cancelled', 'the runner does not overwrite a cancel');
      const twice = await call('POST', `/api/v1/jobs/${jobId}/cancel`, operator, {});
      assert.equal(twice.status, 409);
      assert.equal(twice.json.code, 'ILLEGAL_TRANSITION');

      // A failover job may never be cancelled half-way.
      const failover = await server.repos.jobs.create({ kind: 'failover', itemId: null, initiator: 'test', steps: JOB_KINDS.failover.steps.map((s) => s.name) });
      await persistJob(server.repos, failover, startJob(failover, clock.now()));
      const refused = await call('POST', `/api/v1/jobs/${failover.id}/cancel`, operator, {});
      assert.equal(refused.status, 409);
      assert.match(String(refused.json.detail), /never be left half-done/);
    } finally {
      prereq.release();
      await server.close();
    }
  });

  it('job events: one data line per change, a keep-alive comment while nothing changes, the stream ends with the job', async () => {
    const clock = offsetClock();
    const prereq = gate();
    const server = await start(join(tmp.path, 'sse'), {
      now: clock.now,
      jobs: { pollIntervalMs: 50, eventsPollMs: 50, eventsKeepAliveMs: 100, handlers: { 'enable-protection': { ...defaultStepHandlers()['enable-protection'], 'Prerequisites check': prereq.handler } } },
    });
    const admin = server.initialAdminToken!;
    const { call } = client(server.url);
    try {
      const { vaultId, configServerId, policyId } = await seedBasics(server, admin, tmp.path);
      const machine = await call('POST', '/api/v1/machines', admin, { configServerId, name: 'app-1', privateIp: '10.0.0.31', os: 'rhel-9.3', kernel: '5.14.0-362' });
      const account = await call('POST', '/api/v1/accounts', admin, { configServerId, name: 'root', username: 'root', privateKey: 'KEY' });
      const enabled = await call('POST', '/api/v1/replication/enable', admin, { vaultId, policyId, configServerId, accountId: account.json.id, machines: [machine.json.id] });
      const jobId = String((enabled.json.jobs as { id: string }[])[0]!.id);
      await prereq.entered;
      const res = await fetch(`${server.url}/api/v1/jobs/${jobId}/events`, { headers: { authorization: `Bearer ${admin}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
      const reading = res.text();
      // The step is held for 400 ms: nothing changes, so the stream says it is alive at least once.
      await new Promise((r) => setTimeout(r, 400));
      prereq.release();
      const text = await reading; // resolves only because the stream closes when the job ends
      assert.match(text, /^: keep-alive$/m, text);
      const events = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as { state: string; steps: { state: string }[] });
      assert.ok(events.length >= 2, text);
      assert.equal(events[0]!.state, 'running');
      assert.equal(events[0]!.steps[0]!.state, 'running');
      assert.equal(events.at(-1)!.state, 'failed');
      const missing = await fetch(`${server.url}/api/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/events`, { headers: { authorization: `Bearer ${admin}` } });
      assert.equal(missing.status, 404);
    } finally {
      prereq.release();
      await server.close();
    }
  });

  it('after a restart, a running job resumes (finalize protection) or fails with the reason (enable protection); none vanishes', async () => {
    const dataDir = join(tmp.path, 'restart');
    const clock = offsetClock();
    const prereq = gate();
    const first = await start(dataDir, {
      now: clock.now,
      jobs: { pollIntervalMs: 50, handlers: { 'enable-protection': { 'Prerequisites check': prereq.handler } } },
    });
    const admin = first.initialAdminToken!;
    const { call } = client(first.url);
    let enableJobId: string;
    let finalizeJobId: string;
    try {
      const { vaultId, configServerId, policyId } = await seedBasics(first, admin, tmp.path);
      const machine = await call('POST', '/api/v1/machines', admin, { configServerId, name: 'fs-1', privateIp: '10.0.0.41', os: 'debian-12', kernel: '6.1.0' });
      const account = await call('POST', '/api/v1/accounts', admin, { configServerId, name: 'root', username: 'root', password: 'pw' });
      const enabled = await call('POST', '/api/v1/replication/enable', admin, { vaultId, policyId, configServerId, accountId: account.json.id, machines: [machine.json.id] });
      enableJobId = String((enabled.json.jobs as { id: string }[])[0]!.id);
      await prereq.entered; // the runner is busy with this job: the next one stays where we put it
      const fin = await first.repos.jobs.create({
        kind: 'finalize-protection',
        itemId: String((enabled.json.items as { id: string }[])[0]!.id),
        initiator: 'test',
        steps: JOB_KINDS['finalize-protection'].steps.map((s) => s.name),
      });
      await persistJob(first.repos, fin, startJob(fin, clock.now()));
      finalizeJobId = fin.id;
    } finally {
      await first.close(); // as if the process died: both jobs are left 'running'
    }

    const ran: string[] = [];
    const ok = (name: string) => async () => {
      ran.push(name);
    };
    const second = await start(dataDir, {
      now: clock.now,
      jobs: {
        pollIntervalMs: 50,
        handlers: {
          'finalize-protection': Object.fromEntries(JOB_KINDS['finalize-protection'].steps.map((s) => [s.name, ok(s.name)])),
        },
      },
    });
    try {
      const c = client(second.url);
      const enableJob = await c.call('GET', `/api/v1/jobs/${enableJobId}`, admin);
      assert.equal(enableJob.json.state, 'failed');
      assert.match(String(enableJob.json.error), /the vault restarted during 'Prerequisites check'; Enable protection does not resume/);
      const fin = await waitFor('the finalize job to end', async () => {
        const j = await c.call('GET', `/api/v1/jobs/${finalizeJobId}`, admin);
        return j.json.state === 'running' ? undefined : j.json;
      });
      assert.equal(fin.state, 'succeeded');
      assert.deepEqual(ran, JOB_KINDS['finalize-protection'].steps.map((s) => s.name));
    } finally {
      await second.close();
    }
  });

  it('alerts: heartbeat lost, job failed and RPO threshold are raised and cleared', async () => {
    const clock = offsetClock();
    const server = await start(join(tmp.path, 'alerts'), { now: clock.now, jobs: { pollIntervalMs: 50 } });
    const admin = server.initialAdminToken!;
    const reader = await tokenFor(server, 'reader', clock.now);
    const { call } = client(server.url);
    const evaluator = new AlertEvaluator({ repos: server.repos, now: clock.now });
    const open = async () => (await call('GET', '/api/v1/alerts', reader)).json.items as { kind: string; subjectId: string; severity: string; message: string }[];
    try {
      const { vaultId, configServerId, policyId } = await seedBasics(server, admin, tmp.path);
      await evaluator.evaluateOnce();
      assert.deepEqual(await open(), []);

      clock.advance(10 * 60 * 1000);
      await evaluator.evaluateOnce();
      let alerts = await open();
      assert.equal(alerts.length, 1);
      assert.equal(alerts[0]!.kind, 'heartbeat-lost');
      assert.equal(alerts[0]!.subjectId, configServerId);
      await server.repos.configServers.update(configServerId, { lastHeartbeatAt: clock.now().toISOString() });
      await evaluator.evaluateOnce();
      assert.deepEqual(await open(), []);
      const all = (await call('GET', '/api/v1/alerts?status=all', reader)).json.items as { clearedAt: string | null }[];
      assert.equal(all.length, 1);
      assert.notEqual(all[0]!.clearedAt, null);

      // A failed enable job raises job-failed.
      const machine = await call('POST', '/api/v1/machines', admin, { configServerId, name: 'web-9', privateIp: '10.0.0.90', os: 'ubuntu-24.04', kernel: '6.8.0-31-generic' });
      const account = await call('POST', '/api/v1/accounts', admin, { configServerId, name: 'root', username: 'root', password: 'pw' });
      const enabled = await call('POST', '/api/v1/replication/enable', admin, { vaultId, policyId, configServerId, accountId: account.json.id, machines: [machine.json.id] });
      const jobId = String((enabled.json.jobs as { id: string }[])[0]!.id);
      const itemId = String((enabled.json.items as { id: string }[])[0]!.id);
      await waitFor('the job to fail', async () => ((await server.repos.jobs.get(jobId)).state === 'failed' ? true : undefined));
      await server.repos.configServers.update(configServerId, { lastHeartbeatAt: clock.now().toISOString() });
      await evaluator.evaluateOnce();
      alerts = await open();
      assert.deepEqual(alerts.map((a) => [a.kind, a.subjectId]), [['job-failed', jobId]]);
      assert.match(alerts[0]!.message, /push install is pending/);

      // RPO above the policy's 600 s threshold raises a warning; back under 80 % clears it.
      await server.repos.items.updateState(itemId, 'enabling', 'protected', { rpoSeconds: 900 });
      await evaluator.evaluateOnce();
      alerts = await open();
      const rpo = alerts.find((a) => a.kind === 'rpo-threshold-exceeded');
      assert.equal(rpo?.subjectId, itemId);
      assert.equal(rpo?.severity, 'warning');
      await evaluator.evaluateOnce(); // idempotent
      assert.equal((await open()).length, alerts.length);
      await server.repos.items.update(itemId, { rpoSeconds: 60 });
      await evaluator.evaluateOnce();
      assert.equal((await open()).find((a) => a.kind === 'rpo-threshold-exceeded'), undefined);
    } finally {
      await server.close();
    }
  });
});
