/**
 * Scheduled drills on the assembled vault (startVaultServer, FakeComputeDriver,
 * the in-test item operations): a due item drill runs and keeps its report, a
 * failing drill raises drill-failed and the next passing one clears it, the next
 * run is scheduled, a busy item is left alone, a drill that cannot start is a
 * failed drill, and a plan's drill runs its job and its cleanup.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DrillSettings } from '../../../src/core/model.js';
import { startPlansVault, type PlansVault } from './harness.js';

const HOUR = 3600_000;

describe('scheduled drills', () => {
  let v: PlansVault;

  before(async () => {
    v = await startPlansVault('drills', { drillIntervalMs: 50 });
  });
  after(async () => v.stop());

  const schedule = async (id: string, subjectKind: 'item' | 'plan', hours = 24): Promise<void> => {
    await v.server.repos.drillSettings.put({
      id,
      subjectKind,
      probes: [],
      bootMarker: null,
      bootTimeoutSeconds: 600,
      scheduleEveryHours: hours,
      nextRunAt: new Date(Date.now() - 1000).toISOString(),
      lastRunAt: null,
    });
  };
  /** Makes the drill due again and waits until it ran (lastRunAt moves) or was put off (nextRunAt moves). */
  const runDue = async (id: string, moved: (s: DrillSettings, before: DrillSettings) => boolean = (s, b) => s.lastRunAt !== b.lastRunAt): Promise<DrillSettings> => {
    const repo = v.server.repos.drillSettings;
    const before = await repo.update(id, { nextRunAt: new Date(Date.now() - 1000).toISOString() });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const s = await repo.get(id);
      if (moved(s, before)) {
        // The verdict is written before the schedule: give the last writes a moment to land.
        await new Promise((r) => setTimeout(r, 50));
        return repo.get(id);
      }
      if (Date.now() > deadline) throw new Error(`the drill of ${id} never ran: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const openAlert = async (subjectId: string) => (await v.server.repos.alerts.list({ open: true, kind: 'drill-failed', subjectId }))[0];

  it('runs a due item drill: test failover at the newest processed point, cleanup, report kept, next run scheduled', async () => {
    const item = await v.item('sched-pass');
    await schedule(item.id, 'item', 24);
    const started = Date.now();
    const s = await runDue(item.id);
    assert.ok(s.lastRunAt && Date.parse(s.lastRunAt) >= started - 1000);
    assert.ok(Math.abs(Date.parse(s.nextRunAt!) - (Date.now() + 24 * HOUR)) < 60_000, `next run in 24 h: ${s.nextRunAt}`);
    const calls = v.world.calls.filter((c) => c.itemId === item.id);
    assert.deepEqual(calls.map((c) => c.op), ['test-failover', 'cleanup-test-failover']);
    assert.deepEqual((calls[0]!.input as { point: unknown; trigger: string }).point, { kind: 'latest-processed' });
    assert.equal((calls[0]!.input as { trigger: string }).trigger, 'schedule');
    const [report] = await v.server.repos.drillReports.listByItem(item.id);
    assert.equal(report?.trigger, 'schedule');
    assert.equal(report?.outcome, 'passed');
    assert.equal(report?.notes, 'scheduled drill');
    assert.equal((await v.server.repos.items.get(item.id)).state, 'protected');
    assert.equal(await openAlert(item.id), undefined);
  });

  it('a failing drill raises drill-failed naming the report and the error, still cleans up; the next passing drill clears it', async () => {
    const item = await v.item('sched-fail');
    v.world.behaviour.set(`test-failover:${item.id}`, 'fail-report');
    await schedule(item.id, 'item', 12);
    await runDue(item.id);
    const alert = await openAlert(item.id);
    assert.ok(alert, 'drill-failed is raised');
    assert.equal(alert.severity, 'critical');
    const [report] = await v.server.repos.drillReports.listByItem(item.id);
    assert.equal(report?.outcome, 'failed');
    assert.ok(alert.message.includes(`report ${report.id}`), alert.message);
    assert.match(alert.message, /sched-fail .*: report \S+: fake: the probe port 22 did not answer/);
    assert.equal((await v.server.repos.items.get(item.id)).state, 'protected', 'cleaned up after the failed drill');
    assert.ok(v.world.calls.some((c) => c.itemId === item.id && c.op === 'cleanup-test-failover'));

    v.world.behaviour.delete(`test-failover:${item.id}`);
    const s = await runDue(item.id);
    assert.equal(await openAlert(item.id), undefined, 'the passing drill cleared it');
    assert.equal((await v.server.repos.alerts.list({ kind: 'drill-failed', subjectId: item.id })).length, 1, 'one alert, now cleared');
    assert.ok(Math.abs(Date.parse(s.nextRunAt!) - (Date.now() + 12 * HOUR)) < 60_000);
  });

  it('a drill that cannot start is a failed drill', async () => {
    const item = await v.item('sched-refused');
    v.world.behaviour.set(`test-failover:${item.id}`, 'refuse');
    await schedule(item.id, 'item');
    await runDue(item.id);
    const alert = await openAlert(item.id);
    assert.ok(alert);
    assert.match(alert.message, /no report: the drill could not start: fake: test-failover of \S+ refused as told/);
    assert.ok(!v.world.calls.some((c) => c.itemId === item.id && c.op === 'cleanup-test-failover'), 'nothing to clean up');
  });

  it('leaves an item alone while an operator drill runs, and tries again 10 minutes later', async () => {
    const item = await v.item('sched-busy');
    assert.ok(await v.server.repos.items.updateState(item.id, 'protected', 'test-failover'));
    await schedule(item.id, 'item');
    const s = await runDue(item.id, (now, before) => now.nextRunAt !== before.nextRunAt);
    assert.equal(s.lastRunAt, null);
    assert.ok(Math.abs(Date.parse(s.nextRunAt!) - (Date.now() + 10 * 60_000)) < 30_000, `retry in 10 min: ${s.nextRunAt}`);
    assert.ok(!v.world.calls.some((c) => c.itemId === item.id));
    assert.equal((await v.server.repos.items.get(item.id)).state, 'test-failover', 'the operator drill is untouched');
    assert.equal(await openAlert(item.id), undefined);
  });

  it("runs a plan's drill: the plan's test failover job (manual actions pass unattended), then its cleanup; an item's failed report fails it", async () => {
    const [a, b] = [await v.item('plan-drill-1'), await v.item('plan-drill-2')];
    const created = await v.call('POST', '/api/v1/plans', {
      vaultId: v.vaultId,
      name: 'drilled',
      groups: [
        { name: 'one', itemIds: [a.id], manualActions: ['nobody is there at night'] },
        { name: 'two', itemIds: [b.id] },
      ],
    });
    const planId = String(created.json.id);
    const put = await v.call('PUT', `/api/v1/plans/${planId}/drill-settings`, { scheduleEveryHours: 168 });
    assert.equal(put.status, 200, put.text);
    assert.equal(put.json.subjectKind, 'plan');
    v.world.behaviour.set(`test-failover:${b.id}`, 'fail-report');
    await runDue(planId);
    const alert = await openAlert(planId);
    assert.ok(alert, 'drill-failed on the plan');
    const [report] = await v.server.repos.drillReports.listByItem(b.id);
    assert.ok(alert.message.includes(`report ${report!.id}`), alert.message);
    assert.match(alert.message, /plan drilled/);
    for (const id of [a.id, b.id]) assert.equal((await v.server.repos.items.get(id)).state, 'protected', 'the plan was cleaned up');
    const jobs = (await v.server.repos.jobs.list({ kind: 'recovery-plan' })).filter((j) => j.initiator === 'scheduler');
    assert.equal(jobs.length, 2, 'the test failover job and the cleanup job');
    assert.ok(jobs[0]!.steps.some((s) => s.name.includes('manual action: nobody is there at night') && s.state === 'succeeded'));

    v.world.behaviour.delete(`test-failover:${b.id}`);
    const s = await runDue(planId);
    assert.equal(await openAlert(planId), undefined, 'the passing plan drill cleared it');
    assert.ok(Math.abs(Date.parse(s.nextRunAt!) - (Date.now() + 168 * HOUR)) < 60_000);
    const shown = await v.call('GET', `/api/v1/plans/${planId}/drill-settings`);
    assert.equal(shown.json.lastRunAt, s.lastRunAt);
  });

  it("leaves a plan alone while an operator's job of it runs, and tries again 10 minutes later", async () => {
    const a = await v.item('plan-busy-1');
    const created = await v.call('POST', '/api/v1/plans', { vaultId: v.vaultId, name: 'busy-plan', groups: [{ name: 'g', itemIds: [a.id], manualActions: ['wait for me'] }] });
    const planId = String(created.json.id);
    const operatorJob = await v.call('POST', `/api/v1/plans/${planId}/test-failover`, {});
    await v.waitJob(String(operatorJob.json.id), (j) => j.steps[1]!.state === 'running');
    await schedule(planId, 'plan');
    const s = await runDue(planId, (now, before) => now.nextRunAt !== before.nextRunAt);
    assert.equal(s.lastRunAt, null);
    assert.ok(Math.abs(Date.parse(s.nextRunAt!) - (Date.now() + 10 * 60_000)) < 30_000, `retry in 10 min: ${s.nextRunAt}`);
    assert.equal((await v.server.repos.jobs.list({ kind: 'recovery-plan' })).filter((j) => j.initiator === 'scheduler' && j.createdAt > String(operatorJob.json.createdAt)).length, 0);
    assert.equal(await openAlert(planId), undefined);
    assert.equal((await v.call('POST', `/api/v1/jobs/${String(operatorJob.json.id)}/acknowledge`, { step: 1 })).status, 200);
    assert.equal((await v.waitJob(String(operatorJob.json.id))).state, 'succeeded');
  });

  it('a drill cut by a vault restart is finished after it: cleaned up and judged, not started again', async () => {
    const item = await v.item('sched-restart');
    v.world.jobMs = 3_600_000; // the test failover is still running when the vault stops
    try {
      await schedule(item.id, 'item');
      const deadline = Date.now() + 30_000;
      while (!v.world.calls.some((c) => c.itemId === item.id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      assert.equal((await v.server.repos.items.get(item.id)).state, 'test-failover');
      v.world.jobMs = 100;
      await v.restart();
    } finally {
      v.world.jobMs = 150;
    }
    const deadline = Date.now() + 30_000;
    while ((await v.server.repos.drillSettings.get(item.id)).lastRunAt === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(v.world.calls.filter((c) => c.itemId === item.id).map((c) => c.op), ['test-failover', 'cleanup-test-failover'], 'one drill, cleaned up');
    assert.equal((await v.server.repos.items.get(item.id)).state, 'protected');
    const alert = await openAlert(item.id);
    assert.match(alert?.message ?? '', /the vault restarted during/);
  });
});
