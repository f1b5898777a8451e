/**
 * A recovery plan over the vault's own item operations (src/vault/recovery) with
 * the fake compute driver and real recovery points: the plan's job waits for the
 * item's real test failover job (run by the same job runner), pauses at its manual
 * action, and its cleanup leaves no machine behind; a scheduled item drill over the
 * same operations raises and clears drill-failed.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { currentStepIndex } from '../../../src/core/jobs.js';
import type { DrillSettings, Job } from '../../../src/core/model.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import { DrillScheduler } from '../../../src/vault/plans/scheduler.js';
import { PlanService } from '../../../src/vault/plans/service.js';
import { Operations } from '../../../src/vault/recovery/operations.js';
import { waitFor } from '../replication/harness.js';
import { startRecoveryVault, type RecoveryVault } from '../recovery/harness.js';

describe('a recovery plan over the real item operations', () => {
  let v: RecoveryVault;

  before(async () => {
    v = await startRecoveryVault('plans-real');
    await v.pointsAt(Date.now() - 60_000, 0x44);
  });
  after(async () => v.stop());

  it("test failover of a plan runs the item's test failover job, waits at the manual action, and the plan's cleanup removes the test machine", async () => {
    const scripts = join(v.dataDir, 'scripts');
    mkdirSync(scripts, { recursive: true });
    const out = join(v.tmpDir, 'mark.out');
    writeFileSync(join(scripts, 'mark.sh'), `#!/bin/sh\necho "$LIFEBOAT_OPERATION $LIFEBOAT_GROUP" >> '${out}'\n`);
    chmodSync(join(scripts, 'mark.sh'), 0o755);
    const created = await v.call('POST', '/api/v1/plans', {
      vaultId: v.item.vaultId,
      name: 'real',
      groups: [{ name: 'web', itemIds: [v.item.id], preScripts: ['mark.sh'], manualActions: ['look at the console'] }],
    });
    assert.equal(created.status, 201, created.text);
    const planId = String(created.json.id);
    const started = await v.call('POST', `/api/v1/plans/${planId}/test-failover`, { point: { kind: 'latest-processed' } });
    assert.equal(started.status, 202, started.text);
    const jobId = String(started.json.id);
    const waiting = await waitFor(
      'the plan to reach its manual action',
      async () => {
        const j: Job = await v.server.repos.jobs.get(jobId);
        assert.notEqual(j.state, 'failed', JSON.stringify(j, null, 1));
        return currentStepIndex(j) === 2 ? j : undefined;
      },
      60_000,
    );
    assert.equal(waiting.steps[1]!.state, 'succeeded');
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'test-failover');
    const [report] = await v.server.repos.drillReports.listByItem(v.item.id);
    assert.equal(report?.planId, planId);
    assert.equal(report?.trigger, 'plan');
    assert.equal(v.fake.size, 1, 'the test machine runs');
    const ack = await v.call('POST', `/api/v1/jobs/${jobId}/acknowledge`, { step: 2 });
    assert.equal(ack.status, 200, ack.text);
    assert.equal((await v.waitJob(jobId)).state, 'succeeded');

    const cleanup = await v.call('POST', `/api/v1/plans/${planId}/test-failover/cleanup`, { notes: 'plan drill' });
    assert.equal(cleanup.status, 202, cleanup.text);
    const cleaned = await v.waitJob(String(cleanup.json.id));
    assert.equal(cleaned.state, 'succeeded', JSON.stringify(cleaned, null, 1));
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'protected');
    assert.equal(v.fake.size, 0, 'no machine left');
    assert.match((await v.server.repos.drillReports.get(report.id)).notes ?? '', /plan drill$/);
    assert.equal(readFileSync(out, 'utf8'), 'test-failover web\ncleanup-test-failover web\n');
  });
});

describe('a scheduled item drill over the real item operations', () => {
  let v: RecoveryVault;

  before(async () => {
    // The "guest" answers the probe's command with a failure when told to (no port on this machine is involved).
    v = await startRecoveryVault('drill-real', { guest: (_id, command) => (command === 'app-check --fail' ? { exitCode: 1, output: 'app down\n' } : { exitCode: 0, output: 'ok\n' }) });
    await v.pointsAt(Date.now() - 60_000, 0x55);
  });
  after(async () => v.stop());

  it('a drill whose probe fails raises drill-failed with its report; the next passing drill clears it; the machine is always cleaned up', async () => {
    const logger = createVaultLogger({ destination: { write: () => undefined } });
    const deps = { repos: v.server.repos, stores: v.server.stores, replica: v.server.replica, agents: v.server.agents, compute: v.fake, now: v.clock.now, logger, dataDir: v.dataDir };
    const operations = new Operations(deps);
    const scheduler = new DrillScheduler({ repos: v.server.repos, operations, plans: new PlanService(v.server.repos, v.clock.now, v.dataDir), now: v.clock.now, logger });
    const id = v.item.id;
    const drill = async (probes: DrillSettings['probes']): Promise<DrillSettings> => {
      await v.server.repos.drillSettings.put({ id, subjectKind: 'item', probes, bootMarker: null, bootTimeoutSeconds: 5, scheduleEveryHours: 6, nextRunAt: new Date(v.clock.now().getTime() - 1000).toISOString(), lastRunAt: null });
      await scheduler.tick();
      await scheduler.idle();
      return v.server.repos.drillSettings.get(id);
    };
    const failed = await drill([{ name: 'app', kind: 'command', command: 'app-check --fail', timeoutSeconds: 2 }]);
    assert.ok(failed.lastRunAt);
    const [report] = await v.server.repos.drillReports.listByItem(id);
    assert.equal(report?.outcome, 'failed');
    assert.equal(report?.trigger, 'schedule');
    const alert = (await v.server.repos.alerts.list({ open: true, kind: 'drill-failed', subjectId: id }))[0];
    assert.ok(alert?.message.includes(`report ${report.id}`), alert?.message);
    assert.equal((await v.server.repos.items.get(id)).state, 'protected');
    assert.equal(v.fake.size, 0, 'cleaned up after the failed drill');

    const passed = await drill([{ name: 'app', kind: 'command', command: 'app-check', timeoutSeconds: 2 }]);
    assert.ok(Math.abs(Date.parse(passed.nextRunAt!) - (v.clock.now().getTime() + 6 * 3600_000)) < 60_000);
    assert.equal((await v.server.repos.drillReports.listByItem(id))[0]?.outcome, 'passed');
    assert.deepEqual(await v.server.repos.alerts.list({ open: true, kind: 'drill-failed', subjectId: id }), []);
    assert.equal(v.fake.size, 0);
    await scheduler.stop();
  });
});
