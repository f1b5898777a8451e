/**
 * The end-to-end proof of recovery (docs/recovery.md, "How it is proved"), real
 * processes only, through the CLI: a tiny Linux machine (boot disk + ext4 data
 * disk) under QEMU writes numbered, checksummed records and acknowledges each
 * on its console while `lifeboat server` protects it through `lifeboat agent
 * run` with the qemu tracker (test/e2e/world.ts). In order:
 * 1. points of the running machine hold every acknowledged record;
 * 2. test failover at latest-processed: the copy boots in the isolated network,
 *    every record acknowledged before the point's capture is there and intact,
 *    the primary is untouched and keeps writing, cleanup leaves nothing;
 * 3. failover with source shutdown, change of point, commit; the old source,
 *    started again, stays fenced and makes no point;
 * 4. reprotect, failback: the records the replica wrote after failover are on
 *    the primary's disk, the bytes shipped follow what changed, not the disk size.
 * The recovery plan is proved in recovery-plan.test.ts (each file stays within
 * the runner's per-file time limit).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Job } from '../../src/core/model.js';
import { PRIMARY_MARKER, readRecordsFile, verifyRecords } from '../helpers/machine.js';
import { DATA_DISK_BYTES, RecoveryWorld, capturedMs, pathsNamed, qemuProcesses, sleep, type PointRow } from './world.js';

/** A chosen point's disk, named by its store disk (`<itemId>.<name>`) or by its name. */
function isDisk(disk: string, name: string): boolean {
  return disk === name || disk.endsWith(`.${name}`);
}

describe('end-to-end recovery of a tiny Linux machine (server, agent, QEMU; CLI only)', { concurrency: false }, () => {
  let w: RecoveryWorld;
  let failoverMachine: string;

  /** Runs reprotect or failback (following its job) and answers what it shipped to the primary machine. */
  const shippedBy = async (args: string[]): Promise<{ bytes: number; blocks: number }> => {
    const r = await w.cliAsync([...args, '--json']);
    assert.equal(r.status, 0, `lifeboat ${args.join(' ')} failed:\n${r.stderr}\n${r.stdout}\n${w.diag()}`);
    const out = JSON.parse(r.stdout) as Job & { shipped: { bytes: number; blocks: number } };
    assert.equal(out.state, 'succeeded');
    assert.ok(Number.isSafeInteger(out.shipped?.bytes), `${args[0]} says what it shipped: ${r.stdout.slice(0, 2000)}`);
    return out.shipped;
  };

  before(async () => {
    w = await RecoveryWorld.start();
  });
  after(async () => {
    await w?.close();
  });

  it("protects the running machine: points of both disks every few seconds, the data disk's hold every acknowledged record", async () => {
    const since = Date.now();
    const fresh = await w.until('two new points of the data disk', () => {
      const ps = w.points('data').filter((pt) => capturedMs(pt) > since);
      return ps.length >= 2 ? ps : undefined;
    }, 120_000);
    assert.ok(w.points('root').length >= 1, 'the boot disk has a point');
    const pt = fresh[fresh.length - 1] as PointRow;
    const mustHold = w.primary.ackedBefore(capturedMs(pt));
    assert.ok(mustHold >= 3, `records were acknowledged before the point (${mustHold})`);
    verifyRecords(await readRecordsFile(w.restore(pt.pointId, 'protect-point')), mustHold);
  });

  it('test failover at latest-processed: the copy boots isolated, holds every record acknowledged before its point, the primary is untouched, cleanup leaves nothing', async (t) => {
    const { primary, itemId } = w;
    w.ok(['drill', 'settings', itemId, '--boot-marker', PRIMARY_MARKER, '--boot-timeout', '600']);
    const primaryPid = primary.pid();
    const primaryBoots = primary.boots();
    assert.ok(primaryPid !== null, 'the primary runs');

    const started = Date.now();
    const job = w.okJson<Job>(['test-failover', 'start', itemId, '--point', 'latest-processed', '--no-wait']);
    await w.watch(job.id);

    const r = w.report();
    assert.equal(r.operation, 'test-failover');
    assert.equal(r.outcome, 'passed', `report: ${JSON.stringify({ ...r, consoleLog: r.consoleLog.slice(-2000) }, null, 2)}`);
    assert.equal(r.network, 'isolated');
    assert.equal(r.driver, 'qemu');
    assert.ok(r.machineId, 'the report names the test machine');
    const machineId = r.machineId;
    const dataPoint = r.point?.disks.find((d) => isDisk(d.disk, 'data'));
    assert.ok(dataPoint, `the report names the data disk's point: ${JSON.stringify(r.point)}`);
    assert.ok(r.point?.disks.some((d) => isDisk(d.disk, 'root')), "and the boot disk's");
    const captured = capturedMs(dataPoint);
    assert.ok(captured <= Date.parse(r.startedAt), 'latest-processed is a point made before the test failover started');
    assert.ok(captured > started - 60_000, 'and a recent one');
    assert.ok(r.rpoSeconds !== null && r.rpoSeconds >= 0 && r.rpoSeconds < 120, `RPO ${r.rpoSeconds} s`);
    assert.ok(r.rtoSeconds !== null && r.rtoSeconds > 0, `RTO ${r.rtoSeconds} s`);
    t.diagnostic(`test failover: RPO ${r.rpoSeconds} s, RTO ${r.rtoSeconds} s, accel ${r.accel}`);
    const markerLine = new RegExp(`${PRIMARY_MARKER} payload=lifeboat-e2e-primary`);
    assert.match(w.machineConsole(machineId), markerLine, 'the copy printed the boot marker on its console');

    // The copy booted from the point: its workload resumed after the point's last record.
    const mustHold = primary.ackedBefore(captured);
    const copy = await w.until('the copy to start its records workload', () => w.machineRecords(machineId), 120_000, () => w.machineConsole(machineId).slice(-2000));
    assert.ok(copy.resumedAfter >= mustHold, `the copy resumed after record ${copy.resumedAfter}, but ${mustHold} was acknowledged before the point`);

    // The point's data disk, read back from the store: every acknowledged record there and intact.
    const held = verifyRecords(await readRecordsFile(w.restore(dataPoint.pointId, 'test-failover-point')), mustHold);
    assert.equal(held.count, copy.resumedAfter, 'the copy resumed right after the last record of its point');

    // The primary was not touched: same process, same boot, still writing, nothing missing.
    assert.equal(primary.pid(), primaryPid, 'the primary QEMU is the same process');
    assert.equal(primary.boots(), primaryBoots, 'the primary did not reboot');
    const lastBefore = primary.lastAck();
    await primary.waitForAck(lastBefore + 3);
    verifyRecords(await readRecordsFile(primary.dataFile), lastBefore);
    assert.equal(w.item().state, 'test-failover');

    // Cleanup: nothing of the test machine is left.
    const cleanup = w.okJson<Job>(['test-failover', 'cleanup', itemId, '--notes', 'e2e drill', '--no-wait']);
    await w.watch(cleanup.id);
    assert.deepEqual(qemuProcesses(machineId), [], 'no QEMU process of the test machine');
    assert.deepEqual(pathsNamed(w.dataDir, machineId), [], 'nothing of the test machine under the data directory');
    assert.equal(w.item().state, 'protected');
    const kept = w.report();
    assert.equal(kept.id, r.id);
    assert.equal(kept.notes, 'e2e drill');
    assert.match(kept.consoleLog, markerLine, "the report keeps the console's tail");
    assert.ok(kept.cleanupJobId, 'the report names its cleanup job');
  });

  it('failover with source shutdown, change of point, commit; the old source is fenced', async () => {
    const { primary, itemId } = w;
    const pointsBefore = w.points('data');
    assert.ok(pointsBefore.length >= 3, `several points to choose from (${pointsBefore.length})`);
    const job = w.okJson<Job>(['failover', 'start', itemId, '--point', 'latest-processed', '--shutdown-source', '--no-wait']);
    await w.watch(job.id);
    assert.equal(w.item().state, 'failed-over');
    // The source was shut down through its agent's shutdownCommand.
    await w.until('the primary to be off', () => (primary.running() ? undefined : true), 60_000);
    const r = w.report();
    assert.equal(r.operation, 'failover');
    assert.ok(r.machineId, 'the failover report names the replica machine');
    failoverMachine = r.machineId;
    const chosen = r.point?.disks.find((d) => isDisk(d.disk, 'data'));
    assert.ok(chosen, JSON.stringify(r.point));
    const booted = await w.until('the replica to resume the records workload', () => w.machineRecords(failoverMachine), 300_000, () => w.machineConsole(failoverMachine).slice(-2000));
    assert.ok(booted.resumedAfter >= primary.ackedBefore(capturedMs(chosen)), 'the replica holds every record acknowledged before its point');

    // Change of point: an earlier point; the replica restarts on it.
    const earlier = pointsBefore.filter((p) => capturedMs(p) < capturedMs(chosen) - 10_000);
    const target = earlier[earlier.length - 1];
    assert.ok(target, 'an earlier point of the data disk');
    const targetHeld = verifyRecords(await readRecordsFile(w.restore(target.pointId, 'change-point')), primary.ackedBefore(capturedMs(target)));
    assert.ok(targetHeld.count < booted.resumedAfter, 'the earlier point holds fewer records');
    const change = w.okJson<Job>(['failover', 'change-point', itemId, '--point', target.pointId, '--no-wait']);
    await w.watch(change.id);
    assert.equal(w.item().state, 'failed-over');
    const rebooted = await w.until(
      'the replica to resume at the earlier point',
      () => {
        const rec = w.machineRecords(failoverMachine);
        return rec && rec.resumedAfter === targetHeld.count ? rec : undefined;
      },
      300_000,
      () => w.machineConsole(failoverMachine).slice(-2000),
    );
    assert.equal(rebooted.resumedAfter, targetHeld.count, "the replica runs on the chosen point's data");

    // Commit: the other points are gone, the chosen ones stay.
    const commit = w.okJson<Job>(['failover', 'commit', itemId, '--no-wait']);
    await w.watch(commit.id);
    assert.equal(w.item().state, 'committed');
    assert.deepEqual(w.points('data').map((p) => p.pointId), [target.pointId], 'only the committed point of the data disk is left');
    assert.equal(w.points('root').length, 1, 'one point of the boot disk is left');

    // The old source comes back (someone starts it): its agent stays fenced and no point is made from it.
    await primary.start();
    await primary.waitForAck(primary.lastAck() + 5);
    await sleep(10_000);
    assert.deepEqual(w.points('data').map((p) => p.pointId), [target.pointId], 'no point from the fenced source');
    assert.match(w.agent.log(), /fenced/, 'the agent was told it is fenced');
    await primary.stop();
    assert.equal(primary.running(), false);
  });

  it('reprotect, then failback: the records written after failover are back at the primary, the bytes shipped follow the change', async (t) => {
    const { primary, itemId } = w;
    assert.ok(failoverMachine, 'the failover ran');
    // What the replica wrote since its point and before reprotect: reprotect ships at least these records.
    const beforeReprotect = w.machineRecords(failoverMachine);
    assert.ok(beforeReprotect, 'the replica runs its workload');
    const reprotected = await shippedBy(['reprotect', itemId]);
    assert.equal(w.item().state, 'reprotected');

    // The replica keeps writing while it is protected in reverse.
    const now = w.machineRecords(failoverMachine);
    assert.ok(now, 'the replica runs its workload');
    await w.until('the replica to write more records', () => {
      const rec = w.machineRecords(failoverMachine);
      return rec && rec.lastAck >= now.lastAck + 20 ? rec : undefined;
    }, 300_000);

    const primaryBoots = primary.boots();
    // Everything the replica acknowledges until failback shuts it down (its console goes with the machine at the end).
    let written = w.machineRecords(failoverMachine);
    const watching = setInterval(() => (written = w.machineRecords(failoverMachine) ?? written), 200);
    const failedBack = await shippedBy(['failback', itemId]).finally(() => clearInterval(watching));
    assert.ok(written && written.lastAck > written.resumedAfter + 20, JSON.stringify(written));
    assert.deepEqual(qemuProcesses(failoverMachine), [], 'the replica machine is stopped');

    // The primary was started by its agent (startCommand) on the written-back disks.
    await primary.waitForBoot(primaryBoots, 300_000);
    const resumed = await w.until('the primary to resume its records', () => primary.resumedAfter(), 60_000);
    assert.ok(resumed >= written.lastAck, `the primary resumed after record ${resumed}; the replica had acknowledged ${written.lastAck}`);
    await primary.waitForAck(written.lastAck + 3);
    verifyRecords(await readRecordsFile(primary.dataFile), written.lastAck);

    const shipped = reprotected.bytes + failedBack.bytes;
    t.diagnostic(`shipped to the primary: reprotect ${reprotected.bytes} bytes (${reprotected.blocks} blocks), failback ${failedBack.bytes} bytes (${failedBack.blocks} blocks); the replica wrote records ${written.resumedAfter + 1}-${written.lastAck}`);
    // A record line is more than 100 bytes; blocks shipped by the continuous reverse replication between the two jobs count in neither.
    const recordBytes = (beforeReprotect.lastAck - beforeReprotect.resumedAfter) * 100;
    assert.ok(reprotected.bytes >= recordBytes, `reprotect shipped ${reprotected.bytes} bytes, less than the records the replica wrote before it (${recordBytes})`);
    assert.ok(shipped < DATA_DISK_BYTES / 4, `bytes shipped ${shipped} are far below the disks' size`);

    await w.until('the item to be protected again', () => (w.item().state === 'protected' ? true : undefined), 300_000);
    const since = Date.now();
    const next = await w.until('a new point from the primary', () => w.points('data').find((p) => capturedMs(p) > since), 120_000);
    verifyRecords(await readRecordsFile(w.restore(next.pointId, 'after-failback')), Math.max(written.lastAck, primary.ackedBefore(capturedMs(next))));
  });
});
