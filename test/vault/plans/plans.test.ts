/**
 * Recovery plans on the assembled vault (startVaultServer, FakeComputeDriver),
 * through the REST API: validation, a two-group plan run to the end with its
 * manual action acknowledged, the order groups run in, failing and escaping
 * scripts, a failed item, and a vault restart while the plan waits.
 */
import assert from 'node:assert/strict';
import { readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { currentStepIndex } from '../../../src/core/jobs.js';
import type { Job, RecoveryPlan, Role } from '../../../src/core/model.js';
import { DbTokens } from '../../../src/vault/services/db-services.js';
import { startPlansVault, type PlansVault } from './harness.js';

async function tokenFor(v: PlansVault, role: Role): Promise<string> {
  const user = await v.server.repos.users.create({ name: `${role}-${Math.random().toString(36).slice(2, 8)}`, role });
  return (await new DbTokens(v.server.repos, () => new Date()).create({ userId: user.id, name: role, expiresAt: null })).secret;
}

const runningStep = (j: Job): number => (j.state === 'running' ? currentStepIndex(j) : -1);

describe('recovery plans', () => {
  let v: PlansVault;
  let operator: string;
  let reader: string;

  before(async () => {
    v = await startPlansVault('plans');
    operator = await tokenFor(v, 'operator');
    reader = await tokenFor(v, 'reader');
  });
  after(async () => v.stop());

  it('validates plans: groups, items of the vault once each, script names, manual action texts, unique names', async () => {
    const a = await v.item('val-a');
    const b = await v.item('val-b');
    const otherVault = await v.server.repos.vaults.create({ name: 'east', location: 'east', storeUrl: 'file:///nonexistent' });
    const cs = await v.server.repos.configServers.create({ vaultId: otherVault.id, name: 'cs-east', address: '10.0.0.6', version: '0.1.0' });
    const policy = await v.server.repos.policies.create({ vaultId: otherVault.id, name: 'pe', rpoThresholdSeconds: 60, retentionHours: 24, appConsistentFrequencyMinutes: 60, crashConsistentFrequencySeconds: 30 });
    const machine = await v.server.repos.machines.create({ configServerId: cs.id, name: 'east-1', privateIp: '10.0.0.8', os: 'debian-12' });
    const foreign = await v.server.repos.items.create({
      vaultId: otherVault.id,
      machineId: machine.id,
      policyId: policy.id,
      state: 'protected',
      compute: { targetName: 'east-1', size: 'small', network: null, subnet: null, ip: null },
      disks: [],
    });
    const create = (body: Record<string, unknown>) => v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'p1', ...body });
    const refused = async (body: Record<string, unknown>, status: number, pattern: RegExp, what: string): Promise<void> => {
      const res = await create(body);
      assert.equal(res.status, status, `${what}: ${res.text}`);
      assert.match(res.text, pattern, what);
    };
    await refused({ groups: [] }, 400, /groups/, 'no groups');
    await refused({ groups: [{ name: 'web', itemIds: [] }] }, 400, /itemIds/, 'a group without items');
    await refused({ groups: [{ name: 'web', itemIds: ['01JNOSUCHITEM0000000000000'] }] }, 400, /not a replicated item of the plan's vault/, 'an unknown item');
    await refused({ groups: [{ name: 'web', itemIds: [foreign.id] }] }, 400, /not a replicated item of the plan's vault/, "another vault's item");
    await refused({ groups: [{ name: 'web', itemIds: [a.id] }, { name: 'db', itemIds: [b.id, a.id] }] }, 400, /appears more than once/, 'an item twice');
    await refused({ groups: [{ name: 'web', itemIds: [a.id] }, { name: 'web', itemIds: [b.id] }] }, 400, /group web appears twice/, 'a group name twice');
    await refused({ groups: [{ name: 'web', itemIds: [a.id], preScripts: ['../../bin/sh'] }] }, 400, /preScripts|pattern/, 'a script path');
    await refused({ groups: [{ name: 'web', itemIds: [a.id], postScripts: ['..'] }] }, 400, /plain file name/, 'a script named ..');
    await refused({ groups: [{ name: 'web', itemIds: [a.id], manualActions: ['x'.repeat(501)] }] }, 400, /manualActions|500/, 'a long manual action');
    await refused({ groups: [{ name: 'web', itemIds: [a.id], manualActions: ['   '] }] }, 400, /manual action/, 'a blank manual action');
    await refused({ groups: [{ name: 'web', itemIds: [a.id], code: 'rm -rf /' }] }, 400, /code|additional/i, 'an unknown field');
    const ok = await create({ description: 'web tier', groups: [{ name: 'web', itemIds: [a.id, b.id], manualActions: ['check the DNS'] }] });
    assert.equal(ok.status, 201, ok.text);
    const plan = ok.json as unknown as RecoveryPlan;
    assert.deepEqual(plan.groups, [{ name: 'web', itemIds: [a.id, b.id], preScripts: [], postScripts: [], manualActions: ['check the DNS'] }]);
    await refused({ groups: [{ name: 'web', itemIds: [a.id] }] }, 409, /already has a plan named p1/, 'a name taken');
    assert.equal((await v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'p2', groups: [{ name: 'web', itemIds: [a.id] }] }, operator)).status, 403);
    const listed = await v.call('GET', `/api/v1/plans?vaultId=${v.vaultId}`, undefined, reader);
    assert.equal(listed.status, 200);
    assert.deepEqual((listed.json.items as RecoveryPlan[]).map((p) => p.name), ['p1']);
    const patched = await v.call('PATCH', `/api/v1/plans/${plan.id}`, { groups: [{ name: 'web', itemIds: [a.id] }, { name: 'db', itemIds: [b.id], preScripts: ['missing.sh'] }] });
    assert.equal(patched.status, 200, patched.text);
    assert.deepEqual((patched.json as unknown as RecoveryPlan).groups.map((g) => g.name), ['web', 'db']);
    // A script the plan names must be in the scripts directory when the plan runs.
    const missing = await v.call('POST', `/api/v1/plans/${plan.id}/test-failover`, {}, operator);
    assert.equal(missing.status, 404, missing.text);
    assert.match(missing.text, /script missing.sh is not in the vault's scripts directory/);
    assert.equal((await v.call('DELETE', `/api/v1/plans/${plan.id}`, undefined, operator)).status, 403);
    assert.equal((await v.call('DELETE', `/api/v1/plans/${plan.id}`)).status, 204);
    assert.equal((await v.call('GET', `/api/v1/plans/${plan.id}`)).status, 404);
  });

  it('runs a two-group plan in order: pre-script, items, manual action acknowledged through the API, then the next group and its post-script', async () => {
    const [a, b, c] = [await v.item('web-1'), await v.item('web-2'), await v.item('db-1')];
    const out = join(v.tmpDirOf(), 'script-runs.txt');
    v.script('start-db.sh', `#!/bin/sh\necho "pre $LIFEBOAT_PLAN_ID $LIFEBOAT_OPERATION $LIFEBOAT_GROUP $(pwd)" >> '${out}'\n`);
    v.script('notify.sh', `#!/bin/sh\necho "post $LIFEBOAT_PLAN_ID $LIFEBOAT_OPERATION $LIFEBOAT_GROUP" >> '${out}'\n`);
    const created = await v.call('POST', '/api/v1/plans', {
      vaultId: v.vaultId,
      name: 'two-groups',
      groups: [
        { name: 'web', itemIds: [a.id, b.id], preScripts: ['start-db.sh'], manualActions: ['check the DNS'] },
        { name: 'db', itemIds: [c.id], postScripts: ['notify.sh'] },
      ],
    });
    assert.equal(created.status, 201, created.text);
    const planId = String(created.json.id);
    const started = await v.call('POST', `/api/v1/plans/${planId}/test-failover`, { point: { kind: 'latest-processed' } }, operator);
    assert.equal(started.status, 202, started.text);
    const job = started.json as unknown as Job;
    assert.equal(job.kind, 'recovery-plan');
    assert.equal(job.itemId, null);
    assert.deepEqual(
      job.steps.map((s) => s.name),
      [
        'Group 1 (web): pre-script start-db.sh',
        'Group 1 (web): test failover of 2 items',
        'Group 1 (web): manual action: check the DNS',
        'Group 2 (db): test failover of 1 item',
        'Group 2 (db): post-script notify.sh',
      ],
    );
    // A second run of the same plan while this one runs is refused.
    assert.equal((await v.call('POST', `/api/v1/plans/${planId}/test-failover`, {}, operator)).status, 409);

    const waiting = await v.waitJob(job.id, (j) => runningStep(j) === 2 || ['succeeded', 'failed', 'cancelled'].includes(j.state));
    assert.equal(runningStep(waiting), 2, JSON.stringify(waiting));
    // Group 1's item jobs have ended; group 2's item has not started while the manual action waits.
    await new Promise((r) => setTimeout(r, 300));
    const ev = v.world.events;
    const ended = (id: string) => ev.findIndex((e) => e.what === 'end' && e.itemId === id && e.kind === 'test-failover');
    const startedAt = (id: string) => ev.findIndex((e) => e.what === 'start' && e.itemId === id && e.kind === 'test-failover');
    assert.ok(ended(a.id) >= 0 && ended(b.id) >= 0, 'group 1 items ended');
    assert.equal(startedAt(c.id), -1, 'group 2 waits for the acknowledgement');
    assert.equal((await v.server.repos.jobs.get(job.id)).steps[1]!.progressPercent, 100);
    assert.equal(readFileSync(out, 'utf8'), `pre ${planId} test-failover web ${v.scriptsDir}\n`);

    // Only the manual step that runs, only with 'operate'.
    assert.equal((await v.call('POST', `/api/v1/jobs/${job.id}/acknowledge`, { step: 1 }, operator)).status, 409);
    assert.equal((await v.call('POST', `/api/v1/jobs/${job.id}/acknowledge`, { step: 3 }, operator)).status, 409);
    assert.equal((await v.call('POST', `/api/v1/jobs/${job.id}/acknowledge`, { step: 2 }, reader)).status, 403);
    ev.push({ what: 'ack' });
    const ack = await v.call('POST', `/api/v1/jobs/${job.id}/acknowledge`, { step: 2 }, operator);
    assert.equal(ack.status, 200, ack.text);

    const done = await v.waitJob(job.id);
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    const ackAt = ev.findIndex((e) => e.what === 'ack');
    assert.ok(startedAt(c.id) > ackAt, 'group 2 started after the acknowledgement');
    assert.ok(startedAt(c.id) > ended(a.id) && startedAt(c.id) > ended(b.id), "group 2 started after group 1's jobs ended");
    assert.equal(readFileSync(out, 'utf8'), `pre ${planId} test-failover web ${v.scriptsDir}\npost ${planId} test-failover db\n`);
    for (const item of [a, b, c]) {
      const [report] = await v.server.repos.drillReports.listByItem(item.id);
      assert.equal(report?.planId, planId);
      assert.equal(report?.trigger, 'plan');
    }
    assert.equal((await v.call('POST', `/api/v1/jobs/${job.id}/acknowledge`, { step: 2 }, operator)).status, 409, 'an ended job acknowledges nothing');

    // The cleanup: one job, the items of each group, the scripts again with the cleanup's operation.
    const cleanup = await v.call('POST', `/api/v1/plans/${planId}/test-failover/cleanup`, { notes: 'all good' }, operator);
    assert.equal(cleanup.status, 202, cleanup.text);
    assert.ok(!(cleanup.json as unknown as Job).steps.some((s) => s.name.includes('manual action')));
    assert.equal((await v.waitJob(String(cleanup.json.id))).state, 'succeeded');
    for (const item of [a, b, c]) assert.equal((await v.server.repos.items.get(item.id)).state, 'protected');
    assert.match(readFileSync(out, 'utf8'), /post \S+ cleanup-test-failover db\n$/);
    assert.ok(v.world.calls.filter((x) => x.op === 'cleanup-test-failover').every((x) => (x.input as { notes: string }).notes === 'all good'));
  });

  it("fails the plan's job with the output of a failing script; its group's items never start", async () => {
    const a = await v.item('fail-1');
    v.script('boom.sh', '#!/bin/sh\necho boom-out\necho boom-err >&2\nexit 3\n');
    const created = await v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'failing-script', groups: [{ name: 'app', itemIds: [a.id], preScripts: ['boom.sh'] }] });
    const started = await v.call('POST', `/api/v1/plans/${String(created.json.id)}/test-failover`, {}, operator);
    const done = await v.waitJob(String(started.json.id));
    assert.equal(done.state, 'failed');
    assert.match(done.steps[0]!.error ?? '', /script boom.sh exited with code 3; stdout: boom-out; stderr: boom-err/);
    assert.equal(done.steps[1]!.state, 'cancelled');
    assert.ok(!v.world.calls.some((x) => x.itemId === a.id), 'the item was never touched');
  });

  it('refuses a script that leads out of the scripts directory', async () => {
    const a = await v.item('escape-1');
    symlinkSync('/bin/true', join(v.scriptsDir, 'outside.sh'));
    const created = await v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'escaping', groups: [{ name: 'app', itemIds: [a.id], postScripts: ['outside.sh'] }] });
    assert.equal(created.status, 201, created.text);
    const started = await v.call('POST', `/api/v1/plans/${String(created.json.id)}/test-failover`, {}, operator);
    assert.equal(started.status, 400, started.text);
    assert.match(started.text, /script outside.sh leads out of the vault's scripts directory/);
    assert.ok(!v.world.calls.some((x) => x.itemId === a.id));
  });

  it("fails the items step naming the items whose jobs failed, after waiting for the group's other items", async () => {
    const [a, b] = [await v.item('item-ok'), await v.item('item-bad')];
    v.world.behaviour.set(`failover:${b.id}`, 'fail-job');
    const created = await v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'failing-item', groups: [{ name: 'app', itemIds: [a.id, b.id] }] });
    const started = await v.call('POST', `/api/v1/plans/${String(created.json.id)}/failover`, { point: { kind: 'latest' }, shutdownSource: true }, operator);
    assert.equal(started.status, 202, started.text);
    const done = await v.waitJob(String(started.json.id));
    assert.equal(done.state, 'failed');
    assert.match(done.steps[0]!.error ?? '', /1 of 2 items failed: item-bad \(\S+\): job \S+ failed: .*fails as told/);
    assert.doesNotMatch(done.steps[0]!.error ?? '', /item-ok/);
    assert.equal((await v.server.repos.items.get(a.id)).state, 'failed-over');
    const calls = v.world.calls.filter((x) => x.op === 'failover' && (x.itemId === a.id || x.itemId === b.id));
    assert.equal(calls.length, 2);
    for (const call of calls) assert.deepEqual({ ...(call.input as object), initiator: 'x' }, { point: { kind: 'latest' }, shutdownSource: true, initiator: 'x', planId: created.json.id });
  });

  it('keeps waiting on a manual action across a vault restart and completes after the acknowledgement; item jobs are never started twice', async () => {
    const [a, b] = [await v.item('restart-1'), await v.item('restart-2')];
    const created = await v.call('POST', '/api/v1/plans', {
      vaultId: v.vaultId,
      name: 'restarted',
      groups: [
        { name: 'first', itemIds: [a.id], manualActions: ['power on the switch'] },
        { name: 'second', itemIds: [b.id] },
      ],
    });
    const started = await v.call('POST', `/api/v1/plans/${String(created.json.id)}/test-failover`, {}, operator);
    const jobId = String(started.json.id);
    await v.waitJob(jobId, (j) => runningStep(j) === 1);
    await v.restart();
    const resumed = await v.server.repos.jobs.get(jobId);
    assert.equal(runningStep(resumed), 1, 'still waiting on the manual action after the restart');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(runningStep(await v.server.repos.jobs.get(jobId)), 1);
    const ack = await v.call('POST', `/api/v1/jobs/${jobId}/acknowledge`, { step: 1 }, operator);
    assert.equal(ack.status, 200, ack.text);
    assert.equal((await v.waitJob(jobId)).state, 'succeeded');
    assert.equal(v.world.calls.filter((x) => x.itemId === a.id).length, 1);
    assert.equal(v.world.calls.filter((x) => x.itemId === b.id).length, 1);
  });

  it('an items step run again after a restart waits for the item jobs it had started instead of starting new ones', async () => {
    const [a, b] = [await v.item('resume-1'), await v.item('resume-2')];
    v.world.jobMs = 3_600_000; // the item jobs do not end by themselves
    try {
      const created = await v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'resumed-items', groups: [{ name: 'app', itemIds: [a.id, b.id] }] });
      const started = await v.call('POST', `/api/v1/plans/${String(created.json.id)}/test-failover`, {}, operator);
      const jobId = String(started.json.id);
      const itemJobs = async (): Promise<Job[]> => [
        ...(await v.server.repos.jobs.list({ itemId: a.id, kind: 'test-failover' })),
        ...(await v.server.repos.jobs.list({ itemId: b.id, kind: 'test-failover' })),
      ];
      const deadline = Date.now() + 30_000;
      while ((await itemJobs()).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      assert.equal((await itemJobs()).length, 2);
      await v.restart();
      // The restart failed the item jobs (a test failover does not resume): the step waited for
      // those same jobs, started none, and names them.
      const done = await v.waitJob(jobId);
      assert.equal(done.state, 'failed');
      assert.match(done.steps[0]!.error ?? '', /2 of 2 items failed: resume-1 .*the vault restarted during .*resume-2 .*the vault restarted during/);
      assert.equal((await itemJobs()).length, 2, 'no new item job after the restart');
      assert.equal(v.world.calls.filter((x) => x.itemId === a.id || x.itemId === b.id).length, 2);
    } finally {
      v.world.jobMs = 150;
    }
  });

  it('an items step run again finds the item jobs a previous run started but had not yet remembered', async () => {
    const [a, b] = [await v.item('adopt-1'), await v.item('adopt-2')];
    v.world.jobMs = 3_600_000;
    try {
      const created = await v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'adopted-items', groups: [{ name: 'app', itemIds: [a.id, b.id] }] });
      const started = await v.call('POST', `/api/v1/plans/${String(created.json.id)}/test-failover`, {}, operator);
      const jobId = String(started.json.id);
      const key = `plan-step:${jobId}:0`;
      const deadline = Date.now() + 30_000;
      while (Object.keys((await v.server.repos.settings.get<Record<string, string>>(key)) ?? {}).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      // As if the vault had stopped between starting the item jobs and remembering them.
      assert.ok(await v.server.repos.settings.delete(key));
      await v.restart();
      const done = await v.waitJob(jobId);
      assert.equal(done.state, 'failed');
      assert.match(done.steps[0]!.error ?? '', /2 of 2 items failed: adopt-1 .*the vault restarted during .*adopt-2 .*the vault restarted during/);
      for (const item of [a, b]) assert.equal((await v.server.repos.jobs.list({ itemId: item.id, kind: 'test-failover' })).length, 1, 'no second item job');
    } finally {
      v.world.jobMs = 150;
    }
  });
});
