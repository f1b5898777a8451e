/**
 * Point choice and drills on the assembled vault with the fake compute driver
 * (docs/recovery.md): the point per disk for each kind of choice, a test failover
 * that boots the point, sees the boot marker and runs the probes into its report,
 * a failing probe (DRILL_FAILED, report failed), a drill without settings, and a
 * cleanup that leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { DrillReport, Job, RecoveredMachine } from '../../../src/core/model.js';
import type { PointManifest } from '../../../src/format/manifest.js';
import { SEGMENT_APP_CONSISTENT } from '../../../src/format/segment.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import { Operations } from '../../../src/vault/recovery/operations.js';
import { waitFor } from '../replication/harness.js';
import { bootBytes, startRecoveryVault, type RecoveryVault } from './harness.js';

const MIN = 60_000;

describe('point choice and test failover', () => {
  let v: RecoveryVault;
  let guestPort: Server;
  let t0: number;
  /** Points per capture: [sda, sdb]. */
  let p1: PointManifest[];
  let p2: PointManifest[];
  let p3sdb: PointManifest;

  before(async () => {
    // The fake forwards the first probe port to 20000 on loopback: the "guest's" service listens there.
    guestPort = createServer((socket) => socket.end('SSH-2.0-fake\r\n'));
    await new Promise<void>((resolve) => guestPort.listen(20000, '127.0.0.1', resolve));
    v = await startRecoveryVault('recovery-drill', {
      guest: (_id, command) => (command === 'systemctl is-system-running' ? { exitCode: 0, output: 'running\n' } : { exitCode: 3, output: 'degraded\n' }),
    });
    t0 = Date.now();
    p1 = await v.pointsAt(t0 - 30 * MIN, 0x11);
    // An app-consistent cut on both disks, then a crash cut on sdb only.
    for (const d of ['sda', 'sdb'] as const) await v.pendingCut(d, t0 - 20 * MIN, 0x22, SEGMENT_APP_CONSISTENT);
    await v.server.replica.processNow(v.item.id);
    p2 = await Promise.all(['sda', 'sdb'].map(async (d) => (await v.repo.latestPoint(`${v.item.id}.${d}`)) as PointManifest));
    p3sdb = await v.point('sdb', t0 - 10 * MIN, 0x33);
  });
  after(async () => {
    await v.stop();
    await new Promise((r) => guestPort.close(r));
  });

  it('latest-processed takes the newest point of each disk', async () => {
    const ops = operations(v);
    const c = await ops.choosePoint(await v.server.repos.items.get(v.item.id), { kind: 'latest-processed' });
    assert.deepEqual(
      c.disks.map((d) => d.pointId),
      [p2[0]!.pointId, p3sdb.pointId],
    );
    assert.deepEqual(
      c.disks.map((d) => d.disk),
      [`${v.item.id}.sda`, `${v.item.id}.sdb`],
      'each point is named by its store disk',
    );
    assert.equal(c.disks[1]!.capturedAt, new Date(t0 - 10 * MIN).toISOString());
  });

  it('point: the named point on its disk, the newest captured at or before it on the others', async () => {
    const ops = operations(v);
    const item = await v.server.repos.items.get(v.item.id);
    const c = await ops.choosePoint(item, { kind: 'point', pointId: p1[1]!.pointId });
    assert.deepEqual(
      c.disks.map((d) => d.pointId),
      [p1[0]!.pointId, p1[1]!.pointId],
    );
    const later = await ops.choosePoint(item, { kind: 'point', pointId: p3sdb.pointId });
    assert.deepEqual(
      later.disks.map((d) => d.pointId),
      [p2[0]!.pointId, p3sdb.pointId],
    );
  });

  it('time: per disk the newest point captured at or before it; NOT_FOUND before the first', async () => {
    const ops = operations(v);
    const item = await v.server.repos.items.get(v.item.id);
    const c = await ops.choosePoint(item, { kind: 'time', at: new Date(t0 - 15 * MIN).toISOString() });
    assert.deepEqual(
      c.disks.map((d) => d.pointId),
      [p2[0]!.pointId, p2[1]!.pointId],
    );
    await assert.rejects(ops.choosePoint(item, { kind: 'time', at: new Date(t0 - 60 * MIN).toISOString() }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'NOT_FOUND');
      assert.match(err.message, /disk sda .* captured at or before/);
      return true;
    });
  });

  it('latest-app-consistent and latest (which processes the pending cuts first); an unknown point is NOT_FOUND', async () => {
    const ops = operations(v);
    const item = await v.server.repos.items.get(v.item.id);
    const app = await ops.choosePoint(item, { kind: 'latest-app-consistent' });
    assert.deepEqual(
      app.disks.map((d) => [d.pointId, d.consistency]),
      [
        [p2[0]!.pointId, 'app'],
        [p2[1]!.pointId, 'app'],
      ],
      'the newer crash point of sdb is passed over',
    );
    await v.pendingCut('sda', t0 - 5 * MIN, 0x44);
    const latest = await ops.choosePoint(item, { kind: 'latest' });
    const sdaNewest = (await v.repo.latestPoint(`${v.item.id}.sda`)) as PointManifest;
    assert.equal(latest.disks[0]!.pointId, sdaNewest.pointId, 'the pending cut became the chosen point');
    assert.equal(latest.disks[0]!.capturedAt, new Date(t0 - 5 * MIN).toISOString());
    await assert.rejects(ops.choosePoint(item, { kind: 'point', pointId: '01ZZZZZZZZZZZZZZZZZZZZZZZZ' }), { code: 'NOT_FOUND' });
  });

  it('a test failover boots the point, sees the boot marker, runs the probes and reports RPO and RTO', async () => {
    const put = await v.call('PUT', `/api/v1/items/${v.item.id}/drill-settings`, {
      probes: [
        { name: 'ssh', kind: 'tcp', port: 22, timeoutSeconds: 10 },
        { name: 'systemd', kind: 'command', command: 'systemctl is-system-running', expectOutput: 'running', timeoutSeconds: 10 },
      ],
      bootMarker: '^FAKE-BOOTED ',
      bootTimeoutSeconds: 30,
      scheduleEveryHours: 168,
    });
    assert.equal(put.status, 200, put.text);
    assert.ok(Date.parse(String(put.json.nextRunAt)) > Date.now() + 167 * 3600_000, 'the first scheduled drill is a week away');
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'point', pointId: p1[0]!.pointId } });
    assert.equal(res.status, 202, res.text);
    const job = await v.waitJob(String(res.json.id));
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.deepEqual(
      job.steps.map((s) => s.state),
      ['succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded'],
    );
    const reports = (await v.call('GET', `/api/v1/items/${v.item.id}/drill-reports`)).json.items as DrillReport[];
    const report = reports.find((r) => r.jobId === job.id) as DrillReport;
    assert.equal(report.outcome, 'passed', JSON.stringify(report));
    assert.deepEqual(
      report.point?.disks.map((d) => d.pointId),
      [p1[0]!.pointId, p1[1]!.pointId],
    );
    // RPO: job start − capture time of the point (30 minutes before t0).
    const jobStart = Date.parse(job.startedAt as string);
    assert.equal(report.rpoSeconds, Math.round((jobStart - (t0 - 30 * MIN)) / 1000));
    assert.ok(report.rtoSeconds !== null && report.rtoSeconds >= 0 && report.rtoSeconds < 60, String(report.rtoSeconds));
    assert.equal(report.machineId, `test-${v.item.id.toLowerCase()}`);
    assert.equal(report.network, 'isolated');
    assert.equal(report.driver, 'fake');
    assert.equal(report.accel, 'tcg');
    assert.deepEqual(
      report.probes.map((p) => [p.name, p.ok]),
      [
        ['ssh', true],
        ['systemd', true],
      ],
    );
    assert.match(report.probes[0]!.detail, /port 22 answered/);
    // The test machine boots the chosen point's bytes, in the isolated network, with the probe's port forwarded.
    const console = await v.fake.console(report.machineId as string);
    assert.match(console, new RegExp(`FAKE-BOOTED ${report.machineId} ${bootBytes(0x11)}`));
    const machines = (await v.call('GET', `/api/v1/items/${v.item.id}/recovered-machines`)).json.items as RecoveredMachine[];
    assert.deepEqual(
      machines.map((m) => [m.id, m.purpose, m.state, m.network]),
      [[report.machineId, 'test', 'running', 'isolated']],
    );
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'test-failover');
    // A second drill is refused while this one is not cleaned up.
    const again = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'latest-processed' } });
    assert.equal(again.status, 409, again.text);
    assert.equal(again.json.code, 'ILLEGAL_TRANSITION');
  });

  it('cleanup keeps the console tail and the notes, removes the machine and its row, and the item is protected again', async () => {
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover/cleanup`, { notes: 'drill ok, signed off' });
    assert.equal(res.status, 202, res.text);
    const job = await v.waitJob(String(res.json.id));
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.equal(v.fake.size, 0, 'no machine is left');
    assert.deepEqual(await v.server.repos.recoveredMachines.listByItem(v.item.id), []);
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'protected');
    const [report] = (await v.call('GET', `/api/v1/items/${v.item.id}/drill-reports`)).json.items as DrillReport[];
    assert.equal(report?.cleanupJobId, job.id);
    assert.equal(report?.notes, 'drill ok, signed off');
    assert.match(String(report?.consoleLog), /FAKE-BOOTED/);
    assert.equal(report?.outcome, 'passed');
    const one = await v.call('GET', `/api/v1/drill-reports/${report?.id}`);
    assert.equal(one.status, 200);
    assert.equal(one.json.id, report?.id);
  });

  it('a failing probe fails the drill (DRILL_FAILED), the report says which, and the item waits for its cleanup', async () => {
    await v.call('PUT', `/api/v1/items/${v.item.id}/drill-settings`, {
      probes: [{ name: 'app', kind: 'command', command: 'check-app', expectOutput: 'healthy', timeoutSeconds: 1 }],
      bootMarker: null,
      scheduleEveryHours: null,
    });
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'latest-processed' } });
    const job: Job = await v.waitJob(String(res.json.id));
    assert.equal(job.state, 'failed');
    assert.match(String(job.error), /Check the test virtual machine: probe failed: app \(exit 3/);
    const report = (await v.server.repos.drillReports.findByJob(job.id)) as DrillReport;
    assert.equal(report.outcome, 'failed');
    assert.equal(report.rtoSeconds, null, 'without a marker the machine counts as booted only when every probe passed');
    assert.deepEqual(
      report.probes.map((p) => [p.name, p.ok]),
      [['app', false]],
    );
    assert.match(String(report.error), /app \(exit 3: degraded\)/);
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'test-failover');
    const cleanup = await v.waitJob(String((await v.call('POST', `/api/v1/items/${v.item.id}/test-failover/cleanup`, {})).json.id));
    assert.equal(cleanup.state, 'succeeded', JSON.stringify(cleanup));
    assert.equal(v.fake.size, 0);
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'protected');
    assert.equal((await v.server.repos.drillReports.get(report.id)).outcome, 'failed', 'the cleanup keeps the verdict');
  });

  it("the drill summary names each item's newest report and its newest passed one, in one request", async () => {
    const reports = (await v.call('GET', `/api/v1/items/${v.item.id}/drill-reports`)).json.items as DrillReport[];
    const passed = reports.find((r) => r.outcome === 'passed');
    assert.equal(reports[0]?.outcome, 'failed', 'the drill just before this one failed');
    assert.ok(passed, 'an earlier drill passed');
    const summary = await v.call('GET', '/api/v1/drill-summary');
    assert.equal(summary.status, 200);
    const mine = (summary.json.items as { itemId: string; latest: DrillReport | null; lastPassed: DrillReport | null }[]).find((s) => s.itemId === v.item.id);
    assert.equal(mine?.latest?.id, reports[0]?.id);
    assert.equal(mine?.lastPassed?.id, passed.id);
  });

  it('without drill settings the machine counts as booted when it started, and the report says so', async () => {
    await v.server.repos.drillSettings.delete(v.item.id);
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'latest' } });
    const job = await v.waitJob(String(res.json.id));
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    const report = (await v.server.repos.drillReports.findByJob(job.id)) as DrillReport;
    assert.equal(report.outcome, 'passed');
    assert.deepEqual(report.probes, []);
    assert.ok(report.rtoSeconds !== null);
    assert.match(String(report.notes), /No drill settings/);
    const cleanup = await v.waitJob(String((await v.call('POST', `/api/v1/items/${v.item.id}/test-failover/cleanup`, { notes: 'fine' })).json.id));
    assert.equal(cleanup.state, 'succeeded');
    assert.match(String((await v.server.repos.drillReports.get(report.id)).notes), /No drill settings.*\nfine$/s);
  });

  it('refuses malformed bodies (400 problem+json) and an unknown point before changing anything (404)', async () => {
    const bad = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'yesterday' } });
    assert.equal(bad.status, 400, bad.text);
    const extra = await v.call('PUT', `/api/v1/items/${v.item.id}/drill-settings`, { probes: [{ name: 'x', kind: 'tcp', port: 99999, timeoutSeconds: 1 }], bootMarker: null, scheduleEveryHours: null });
    assert.equal(extra.status, 400, extra.text);
    const regex = await v.call('PUT', `/api/v1/items/${v.item.id}/drill-settings`, { probes: [], bootMarker: '(', scheduleEveryHours: null });
    assert.equal(regex.status, 400, regex.text);
    const missing = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'time', at: '2001-01-01T00:00:00Z' } });
    assert.equal(missing.status, 404, missing.text);
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'protected');
  });

  it('a drill waiting for its boot marker is cancelled at once; waitForJob answers the ended job', async () => {
    await v.call('PUT', `/api/v1/items/${v.item.id}/drill-settings`, { probes: [], bootMarker: 'NEVER-PRINTED', bootTimeoutSeconds: 600, scheduleEveryHours: null });
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'latest-processed' } });
    const id = String(res.json.id);
    await waitFor('the drill to wait for its marker', async () => ((await v.server.repos.jobs.get(id)).steps[4]?.state === 'running' ? true : undefined));
    const aborted = new AbortController();
    aborted.abort();
    await assert.rejects(operations(v).waitForJob(id, aborted.signal), { code: 'TIMEOUT' });
    assert.equal((await v.call('POST', `/api/v1/jobs/${id}/cancel`, {})).status, 200);
    const job = await operations(v).waitForJob(id);
    assert.equal(job.state, 'cancelled');
    // The check step notices the cancel and ends: the next job runs without waiting out the boot timeout.
    const cleanup = await v.waitJob(String((await v.call('POST', `/api/v1/items/${v.item.id}/test-failover/cleanup`, {})).json.id));
    assert.equal(cleanup.state, 'succeeded', JSON.stringify(cleanup));
    const report = (await v.server.repos.drillReports.findByJob(id)) as DrillReport;
    assert.equal(report.outcome, 'failed');
    assert.match(String(report.error), /interrupted \((the job was cancelled|the item is now test-failover-cleanup)\)/);
    assert.equal(v.fake.size, 0);
  });

  it('a failover interrupts a drill still waiting for its marker, cleans it up and takes over', async () => {
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'latest-processed' } });
    const drillId = String(res.json.id);
    await waitFor('the drill to wait for its marker', async () => ((await v.server.repos.jobs.get(drillId)).steps[4]?.state === 'running' ? true : undefined));
    const failover = await v.call('POST', `/api/v1/items/${v.item.id}/failover`, { point: { kind: 'latest-processed' } });
    assert.equal(failover.status, 202, failover.text);
    const job = await v.waitJob(String(failover.json.id));
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    const drill = await v.server.repos.jobs.get(drillId);
    assert.equal(drill.state, 'failed');
    assert.match(String(drill.error), /interrupted \(the item is now failing-over\)/);
    assert.deepEqual(
      (await v.fake.list()).map((m) => m.id),
      [`failover-${v.item.id.toLowerCase()}`],
    );
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'failed-over');
  });
});

function operations(v: RecoveryVault): Operations {
  return new Operations({
    repos: v.server.repos,
    stores: v.server.stores,
    replica: v.server.replica,
    agents: v.server.agents,
    compute: v.fake,
    now: v.clock.now,
    logger: createVaultLogger({ destination: { write: () => undefined } }),
    dataDir: v.dataDir,
  });
}
