/**
 * Failover, change of recovery point and commit on the assembled vault with the fake
 * compute driver (docs/recovery.md): a failover from a drill cleans the drill up
 * first; a running failover cannot be cancelled and resumes after a vault restart at
 * the step it was in; the replica is recreated at another point; commit deletes the
 * other points and keeps the chosen; retention never deletes a point in use.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MachineDiskSpec, MachineStatus } from '../../../src/compute/driver.js';
import { FakeComputeDriver } from '../../../src/compute/fake.js';
import type { Job } from '../../../src/core/model.js';
import type { PointManifest } from '../../../src/format/manifest.js';
import { openDatabase } from '../../../src/vault/db/open.js';
import { createRepositories } from '../../../src/vault/db/repositories/index.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import { MachineSources } from '../../../src/vault/recovery/machines.js';
import { waitFor } from '../replication/harness.js';
import { bootBytes, startRecoveryVault, type RecoveryVault } from './harness.js';

const MIN = 60_000;

describe('failover, change of point, commit', () => {
  let v: RecoveryVault;
  let t0: number;
  let old: PointManifest[];
  let newer: PointManifest[];

  before(async () => {
    v = await startRecoveryVault('recovery-failover');
    t0 = Date.now();
    old = await v.pointsAt(t0 - 30 * MIN, 0x51);
    newer = await v.pointsAt(t0 - 10 * MIN, 0x52);
  });
  after(async () => v.stop());

  const failoverId = () => `failover-${v.item.id.toLowerCase()}`;
  const testId = () => `test-${v.item.id.toLowerCase()}`;

  it('a failover during a drill cleans the drill up first, then creates the replica machine', async () => {
    const drill = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'latest-processed' } });
    assert.equal((await v.waitJob(String(drill.json.id))).state, 'succeeded');
    assert.equal(v.fake.size, 1);
    const generation = (await v.server.repos.items.get(v.item.id)).generation;

    const res = await v.call('POST', `/api/v1/items/${v.item.id}/failover`, { point: { kind: 'latest-processed' }, shutdownSource: true });
    assert.equal(res.status, 202, res.text);
    const failover = await v.waitJob(String(res.json.id));
    assert.equal(failover.state, 'succeeded', JSON.stringify(failover));
    // No agent and no push account: the source cannot be shut down; the optional step says why and the failover goes on.
    assert.equal(failover.steps[1]?.name, 'Shut down the source machine');
    assert.equal(failover.steps[1]?.state, 'failed');
    assert.match(String(failover.steps[1]?.error), /could not be shut down/);
    const [cleanup] = await v.server.repos.jobs.list({ itemId: v.item.id, kind: 'cleanup-test-failover' });
    assert.equal(cleanup?.state, 'succeeded', JSON.stringify(cleanup));
    const created = failover.steps.find((s) => s.name === 'Create the replica virtual machine');
    assert.ok(Date.parse(String(cleanup?.endedAt)) <= Date.parse(String(created?.startedAt)), 'the drill was cleaned up before the replica machine was made');

    const item = await v.server.repos.items.get(v.item.id);
    assert.equal(item.state, 'failed-over');
    assert.equal(item.generation, generation + 1, 'the failover raised the generation (the source is fenced)');
    const machines = await v.fake.list();
    assert.deepEqual(
      machines.map((m) => [m.id, m.state]),
      [[failoverId(), 'running']],
    );
    assert.match(await v.fake.console(failoverId()), new RegExp(bootBytes(0x52)));
    const rows = await v.server.repos.recoveredMachines.listByItem(v.item.id);
    assert.deepEqual(
      rows.map((r) => [r.id, r.purpose, r.network, r.state]),
      [[failoverId(), 'failover', 'user', 'running']],
    );
    const [failoverReport, drillReport] = await v.server.repos.drillReports.listByItem(v.item.id);
    assert.equal(drillReport?.cleanupJobId, cleanup?.id, 'the drill report names the cleanup the failover queued');
    // The failover's own report: its point, RPO and the time to the replica's start.
    assert.equal(failoverReport?.operation, 'failover');
    assert.equal(failoverReport?.jobId, failover.id);
    assert.equal(failoverReport?.outcome, 'passed');
    assert.equal(failoverReport?.machineId, failoverId());
    assert.equal(failoverReport?.network, 'user');
    assert.deepEqual(
      failoverReport?.point?.disks.map((d) => d.pointId),
      newer.map((p) => p.pointId),
    );
    assert.equal(failoverReport?.rpoSeconds, Math.round((Date.parse(String(failover.startedAt)) - (t0 - 10 * MIN)) / 1000));
    assert.ok(failoverReport?.rtoSeconds !== null && failoverReport!.rtoSeconds >= 0);
    assert.ok(!(await v.fake.list()).some((m) => m.id === testId()));
  });

  it('the recovery point changes: the replica machine is recreated at the older point', async () => {
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/change-point`, { point: { kind: 'point', pointId: old[0]!.pointId } });
    assert.equal(res.status, 202, res.text);
    const job = await v.waitJob(String(res.json.id));
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.match(await v.fake.console(failoverId()), new RegExp(bootBytes(0x51)), 'the new machine boots the older point');
    const row = await v.server.repos.recoveredMachines.get(failoverId());
    assert.deepEqual(
      row.point.disks.map((d) => d.pointId),
      old.map((p) => p.pointId),
    );
    assert.equal(row.jobId, job.id);
    assert.equal(v.fake.size, 1);
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'failed-over');
  });

  it('commit deletes every other point of the item and keeps the chosen ones', async () => {
    const pointsBefore = await v.repo.listPoints(`${v.item.id}.sda`);
    assert.ok(pointsBefore.length >= 2);
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/commit`, {});
    assert.equal(res.status, 202, res.text);
    const job = await v.waitJob(String(res.json.id));
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    for (const [i, d] of (['sda', 'sdb'] as const).entries()) {
      const left = await v.repo.listPoints(`${v.item.id}.${d}`);
      assert.deepEqual(
        left.map((p) => p.pointId),
        [old[i]!.pointId],
      );
    }
    assert.ok(!(await v.repo.listPoints(`${v.item.id}.sda`)).some((p) => p.pointId === newer[0]!.pointId));
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'committed');
    const again = await v.call('POST', `/api/v1/items/${v.item.id}/change-point`, { point: { kind: 'latest-processed' } });
    assert.equal(again.status, 409, 'no change of point after commit');
  });
});

/** A fake whose machines keep reading their sources (like QEMU before its background copy ends): a restart must serve them again. */
class DependentFake extends FakeComputeDriver {
  readonly adopted: { id: string; firstBytes: string[] }[] = [];

  override async status(id: string): Promise<MachineStatus> {
    return { ...(await super.status(id)), independent: false, copyPercent: 40 };
  }

  override async adopt(id: string, disks: readonly MachineDiskSpec[]): Promise<MachineStatus> {
    this.adopted.push({ id, firstBytes: await Promise.all(disks.map(async (d) => (await d.source.read(0, 16)).toString('hex'))) });
    return super.adopt(id, disks);
  }
}

describe('failover across a vault restart', () => {
  let v: RecoveryVault;
  let fake: DependentFake;

  before(async () => {
    fake = new DependentFake();
    v = await startRecoveryVault('recovery-restart', fake);
    await v.pointsAt(Date.now() - 5 * MIN, 0x61);
    // The source's agent heartbeats: the failover waits for it to hear that it is fenced.
    await v.server.repos.agents.enroll({
      itemId: v.item.id,
      machineId: v.item.machineId,
      hostname: 'web',
      certificateSerial: '1a2b',
      certificateNotAfter: new Date(Date.now() + 86400_000).toISOString(),
      disks: [],
      credentialHash: 'y'.repeat(64),
    });
    const agent = await v.server.repos.agents.findByItem(v.item.id);
    await v.server.repos.agents.heartbeat(agent!.id, { version: '0.1.0', lastHeartbeatAt: new Date().toISOString(), disks: [] });
  });
  after(async () => v.stop());

  it('a running failover cannot be cancelled, and resumes at its step after a restart', async () => {
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/failover`, { point: { kind: 'latest' } });
    assert.equal(res.status, 202, res.text);
    const id = String(res.json.id);
    const fencing = await waitFor('the failover to wait at "Fence the source"', async () => {
      const job = await v.server.repos.jobs.get(id);
      return job.steps.find((s) => s.name === 'Fence the source')?.state === 'running' ? job : undefined;
    });
    assert.equal(fencing.steps[1]?.state, 'succeeded', 'shutting the source down was not asked for');
    const cancel = await v.call('POST', `/api/v1/jobs/${id}/cancel`, {});
    assert.equal(cancel.status, 409, cancel.text);
    assert.equal(cancel.json.code, 'ILLEGAL_TRANSITION');
    assert.match(String(cancel.json.detail), /never be left half-done/);

    const prior = await v.server.repos.jobs.get(id);
    // The vault resumes running jobs while it starts: the old source's agent heartbeats meanwhile
    // (written through a second connection to the database) and hears that it is fenced.
    const restarting = v.restart();
    const side = await openDatabase(`sqlite://${join(v.dataDir, 'vault.db')}`, { migrate: false });
    try {
      const repos = createRepositories(side);
      await waitFor('the vault to resume the failover', async () => ((await repos.jobs.get(id)).steps[2]?.state === 'running' ? true : undefined));
      const agent = await repos.agents.findByItem(v.item.id);
      await repos.agents.heartbeat(agent!.id, { version: '0.1.0', lastHeartbeatAt: new Date(Date.now() + 1000).toISOString(), disks: [] });
    } finally {
      await side.close();
    }
    await restarting;
    let job: Job = await v.server.repos.jobs.get(id);
    assert.deepEqual(job.steps.slice(0, 2), prior.steps.slice(0, 2), 'the steps done before the restart are not run again');
    assert.equal(job.steps[2]?.startedAt, prior.steps[2]?.startedAt, 'the step it was in ran again, as the same step');
    job = await v.waitJob(id);
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.equal((await v.server.repos.items.get(v.item.id)).state, 'failed-over');
    assert.deepEqual(
      (await v.fake.list()).map((m) => [m.id, m.state]),
      [[`failover-${v.item.id.toLowerCase()}`, 'running']],
    );
    assert.match(await v.fake.console(`failover-${v.item.id.toLowerCase()}`), new RegExp(bootBytes(0x61)));
  });

  it('a vault restart serves the running replica its recovery point again; a step run again finds the machine it made', async () => {
    fake.adopted.length = 0;
    await v.restart();
    assert.equal(v.fake.size, 1);
    assert.deepEqual(fake.adopted, [{ id: `failover-${v.item.id.toLowerCase()}`, firstBytes: [bootBytes(0x61), bootBytes(0x61)] }], 'adopted with a reader per disk, in disk order');
    const row = await v.server.repos.recoveredMachines.get(`failover-${v.item.id.toLowerCase()}`);
    assert.equal(row.state, 'running');
    // A fresh process's view (nothing served yet): "Create the replica virtual machine" run again.
    const sources = new MachineSources({
      repos: v.server.repos,
      stores: v.server.stores,
      replica: v.server.replica,
      agents: v.server.agents,
      compute: v.fake,
      now: v.clock.now,
      logger: createVaultLogger({ destination: { write: () => undefined } }),
      dataDir: v.dataDir,
    });
    const item = await v.server.repos.items.get(v.item.id);
    const status = await sources.ensureCreated({ id: row.id, item, point: row.point, network: { kind: 'user' }, trackChanges: true }, new AbortController().signal);
    assert.equal(status.id, row.id);
    assert.equal(v.fake.size, 1, 'nothing was made twice');
    await assert.rejects(v.fake.create({ id: row.id, name: 'x', disks: [], network: { kind: 'none' } }), { code: 'CONFLICT' }, 'the driver itself refuses a second create');
    await sources.closeAll();
  });
});

describe('retention and recovered machines', () => {
  let v: RecoveryVault;

  before(async () => {
    v = await startRecoveryVault('recovery-retention', {}, 1);
  });
  after(async () => v.stop());

  it('never deletes a point a drill uses; deletes it once the drill is cleaned up', async () => {
    const now = Date.now();
    const [stale] = await v.pointsAt(now - 2 * 3600_000, 0x71);
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, { point: { kind: 'point', pointId: stale!.pointId } });
    assert.equal((await v.waitJob(String(res.json.id))).state, 'succeeded');
    // A newer point; retention (every 30 s per disk) would drop the stale one, older than the 1 h retention.
    v.clock.advance(31_000);
    await v.pointsAt(Date.now(), 0x72);
    const ids = async () => (await v.repo.listPoints(`${v.item.id}.sda`)).map((p) => p.pointId);
    assert.ok((await ids()).includes(stale!.pointId), 'the point the test machine boots from is kept');
    const cleanup = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover/cleanup`, {});
    assert.equal((await v.waitJob(String(cleanup.json.id))).state, 'succeeded');
    v.clock.advance(31_000);
    await v.server.replica.processNow(v.item.id);
    assert.ok(!(await ids()).includes(stale!.pointId), 'once nothing uses it, retention deletes it');
  });
});

describe('a failover that failed', () => {
  let v: RecoveryVault;

  before(async () => {
    v = await startRecoveryVault('recovery-failover-retry', { failOn: 'create' });
    await v.pointsAt(Date.now() - 5 * MIN, 0x71);
  });
  after(async () => v.stop());

  it('leaves the item failing over (never back to protected), and is run again, not undone', async () => {
    const first = await v.call('POST', `/api/v1/items/${v.item.id}/failover`, { point: { kind: 'latest-processed' } });
    assert.equal(first.status, 202, first.text);
    const failed = await v.waitJob(String(first.json.id));
    assert.equal(failed.state, 'failed');
    assert.match(String(failed.error), /Create the replica virtual machine: fake: create .* fails as told/);
    const item = await v.server.repos.items.get(v.item.id);
    assert.equal(item.state, 'failing-over', 'the source is fenced: the item does not go back');

    v.fake.failOn = undefined;
    const again = await v.call('POST', `/api/v1/items/${v.item.id}/failover`, { point: { kind: 'latest-processed' } });
    assert.equal(again.status, 202, again.text);
    const done = await v.waitJob(String(again.json.id));
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    const after = await v.server.repos.items.get(v.item.id);
    assert.equal(after.state, 'failed-over');
    assert.equal(after.generation, item.generation, 'running it again raises the generation no further');
    assert.match(await v.fake.console(`failover-${v.item.id.toLowerCase()}`), new RegExp(bootBytes(0x71)));
  });

  it('once failed over, another failover is refused', async () => {
    const res = await v.call('POST', `/api/v1/items/${v.item.id}/failover`, { point: { kind: 'latest-processed' } });
    assert.equal(res.status, 409, res.text);
    assert.equal(res.json.code, 'ILLEGAL_TRANSITION');
    assert.match(String(res.json.detail), /failed-over/);
  });
});
