/**
 * Storage outage: the vault's store (Azure Blob, on Azurite) is unreachable for two
 * minutes while the protected disk keeps being written. Real processes: `lifeboat
 * server` (vault + built-in process server, store azblob://) and `lifeboat agent run`
 * (journal tracker over a sparse 128 MiB image, NBD on a Unix socket); the test writes
 * records through the agent's export (NBD write + flush: acknowledged only when durable).
 *
 * What a user would notice, and what this test asserts:
 * - during the outage the agent's cuts keep being acknowledged: the process server's
 *   spool absorbs them (its segment count and bytes grow, GET /metrics), the agent
 *   keeps committing cuts, nothing is refused;
 * - the item's RPO grows past the policy's threshold and the rpo-threshold-exceeded
 *   alert is raised (GET /api/v1/alerts);
 * - once the store is back the spool drains, new points appear, the alert clears;
 * - the point taken after the writer stopped equals the disk byte for byte, every
 *   record acknowledged before its capture time is in it, and the store verifies clean.
 *
 * The outage is two minutes of real time, as the requirement says. The policy uses the
 * API's shortest crash-consistent frequency (5 s) and RPO threshold (30 s).
 * LIFEBOAT_FAULT_SEED replays a seed (it picks the records' slots and contents).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startRestartableAzurite, type RestartableAzuriteService } from '../helpers/services.js';
import { faultSeed } from './harness.js';
import { alertsAbout, agentEvents, processServerFigures, resyncsAfterStart, restorePoint, Sampler, every, type ApiCaller } from './outage-helpers.js';
import { ReplicationRig, capturedAtMs, sleep, waitUntil } from './replication-harness.js';

const SEED = faultSeed(20_260_126);
const OUTAGE_MS = 120_000;
const RPO_THRESHOLD_SECONDS = 30;
const RPO_ALERT = 'rpo-threshold-exceeded';
const CONTAINER = 'lifeboat-outage';

test('the target store unreachable for two minutes (Azurite stopped): the spool absorbs, the RPO alert fires, then clears after catch-up, nothing lost', { timeout: 300_000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (LIFEBOAT_FAULT_SEED=${SEED} replays it)`);
  const testStart = Date.now();
  let azurite: RestartableAzuriteService | undefined;
  let rig: ReplicationRig | undefined;
  let failed = true;
  try {
    azurite = await startRestartableAzurite();
    // The test reads the store itself (points, verify): the same account and endpoint as the server.
    Object.assign(process.env, azurite.env);
    rig = await ReplicationRig.start({
      name: 'storage-outage',
      seed: SEED,
      storeUrl: azurite.url(CONTAINER),
      serverEnv: { ...azurite.env },
      imageBytes: 128 * 2 ** 20,
      // 4 MiB of record slots: a cut ships at most that much, so two minutes of cuts fit a few hundred MiB of spool.
      slotCount: 1024,
      crashConsistentFrequencySeconds: 5,
    });
    const r = rig;
    const api: ApiCaller = { api: (m, p, b, e, a) => r.api(m, p, b, e, a), text: async (p) => (await fetch(`${r.apiUrl}${p}`, { headers: { authorization: `Bearer ${r.adminToken}` } })).text() };
    await r.api('PATCH', `/api/v1/policies/${r.policyId}`, { rpoThresholdSeconds: RPO_THRESHOLD_SECONDS });
    await waitUntil('the item to be protected', async () => (await r.api('GET', `/api/v1/items/${r.itemId}`)).state === 'protected', 60_000, 250);

    // Steady state: writing, points coming, no RPO alert.
    r.writer.start();
    const writingFrom = Date.now();
    await r.waitForPoint({ capturedAfterMs: writingFrom, timeoutMs: 60_000 });
    await waitUntil('no open RPO alert before the outage', async () => (await alertsAbout(api, RPO_ALERT, r.itemId)).every((a) => a.clearedAt !== null), 60_000, 500);
    const alertsBefore = new Set((await alertsAbout(api, RPO_ALERT, r.itemId)).map((a) => a.id));

    const samples = new Sampler();
    const sampling = every(1000, async () => {
      const figures = processServerFigures(await api.text('/metrics'));
      const item = await r.api('GET', `/api/v1/items/${r.itemId}`);
      const open = (await alertsAbout(api, RPO_ALERT, r.itemId)).filter((a) => a.clearedAt === null && !alertsBefore.has(a.id));
      samples.add({ ...figures, rpoSeconds: typeof item.rpoSeconds === 'number' ? item.rpoSeconds : Number.NaN, rpoAlertOpen: open.length, records: r.writer.acked.records.length });
    });
    await sleep(3000);
    const before = samples.samples.at(-1)?.values ?? {};
    const recordsBefore = r.writer.acked.records.length;

    // ---- the outage ----
    const haltAt = Date.now();
    await azurite.halt();
    t.diagnostic(`Azurite halted at ${new Date(haltAt).toISOString()}`);
    await sleep(OUTAGE_MS - (Date.now() - haltAt));
    const resumeAt = Date.now();
    const eventsAtResume = agentEvents(r.agent as NonNullable<typeof r.agent>);
    await azurite.resume();
    t.diagnostic(`Azurite resumed at ${new Date(resumeAt).toISOString()} after ${((resumeAt - haltAt) / 1000).toFixed(1)} s`);
    const during = (name: string): number => samples.peak(name, haltAt, resumeAt);
    const table = (): string => samples.describe(['spooled_segments', 'spool_used_bytes', 'segments_in_total', 'segments_uploaded_total', 'upload_errors_total', 'rpoSeconds', 'rpoAlertOpen', 'records'], haltAt);

    // The agent kept replicating into the spool: cuts committed (every segment ACKed) all through the outage.
    const cutsDuring = eventsAtResume.filter((e) => e.event === 'cut-committed' && Date.parse(e.at) > haltAt + 10_000);
    assert.ok(cutsDuring.length >= 10, `the agent committed only ${cutsDuring.length} cuts during the outage (segments not acknowledged?)\n${r.agent?.tail()}`);
    assert.ok(!eventsAtResume.some((e) => e.event === 'disconnected' && Date.parse(e.at) > haltAt && /SPOOL_FULL/.test(e.code)), 'the spool refused segments');
    assert.ok(r.writer.acked.records.length > recordsBefore + 100, `the writer was held up during the outage: ${r.writer.acked.records.length - recordsBefore} records`);
    const spoolPeakSegments = during('spooled_segments');
    const spoolPeakBytes = during('spool_used_bytes');
    assert.ok(spoolPeakSegments >= (before.spooled_segments ?? 0) + 10, `the spool did not grow during the outage (peak ${spoolPeakSegments} segments)\n${table()}`);
    assert.ok(during('segments_in_total') - (before.segments_in_total ?? 0) >= 10, `the process server acknowledged too few segments during the outage\n${table()}`);
    const rpoPeak = during('rpoSeconds');
    assert.ok(rpoPeak > RPO_THRESHOLD_SECONDS, `the item's RPO never passed the ${RPO_THRESHOLD_SECONDS} s threshold (peak ${rpoPeak} s)\n${table()}`);
    const alertRaised = samples.firstWhere(haltAt, (v) => (v.rpoAlertOpen ?? 0) > 0);
    assert.ok(alertRaised && alertRaised.atMs <= resumeAt, `no ${RPO_ALERT} alert was raised during the outage\n${table()}`);

    // ---- catch-up ----
    const drained = await waitUntil('the spool to drain', () => samples.firstWhere(resumeAt + 1, (v) => v.spooled_segments === 0 && (v.segments_uploaded_total ?? 0) > (before.segments_uploaded_total ?? 0)), 150_000, 250);
    const freshPoint = await r.waitForPoint({ capturedAfterMs: resumeAt, timeoutMs: 120_000 });
    const freshPointAt = Date.now();
    const cleared = await waitUntil('the RPO alert to clear', async () => {
      const mine = (await alertsAbout(api, RPO_ALERT, r.itemId)).filter((a) => !alertsBefore.has(a.id));
      return mine.length > 0 && mine.every((a) => a.clearedAt !== null) ? mine : undefined;
    }, 120_000, 500);
    const clearedAt = Math.max(...cleared.map((a) => Date.parse(a.clearedAt as string)));
    await sampling.stop();

    // ---- the end state ----
    const acked = await r.writer.stop();
    const stopAt = Date.now();
    const finalPoint = await r.waitForPoint({ capturedAfterMs: stopAt, timeoutMs: 60_000 });
    const disk = await r.writer.readAll();
    const restored = await restorePoint(await r.store(), finalPoint);
    assert.equal(restored.length, disk.length, 'the point has the disk size');
    assert.ok(restored.equals(disk), `the final point ${finalPoint.pointId} differs from the disk`);
    const report = await r.checkPoint(finalPoint, acked);
    assert.equal(report.report.prefix, acked.records.length, 'the final point holds every acknowledged record');
    // Reported, not asserted: after a failure the uploader sends a disk's segments in order, but several
    // at once, so a put may still finish before an earlier one; a processor pass in that moment sees a
    // gap. Before the uploader kept that order, a critical journal-gap alert stayed open ~35 s here.
    const gapAlerts = (await alertsAbout(api, 'journal-gap', r.itemId)).filter((a) => Date.parse(a.raisedAt) >= haltAt);
    const resyncs = resyncsAfterStart(agentEvents(r.agent as NonNullable<typeof r.agent>));
    assert.deepEqual(resyncs, [], 'the outage made the agent resync');
    const verify = await r.verifyStore(true);
    assert.ok(verify.ok, `the store does not verify: ${JSON.stringify(verify.problems.slice(0, 5))}`);

    const numbers = {
      seed: SEED,
      outageSeconds: (resumeAt - haltAt) / 1000,
      spoolPeakSegments,
      spoolPeakMiB: +(spoolPeakBytes / 2 ** 20).toFixed(1),
      rpoPeakSeconds: rpoPeak,
      alertRaisedAfterSeconds: +((alertRaised.atMs - haltAt) / 1000).toFixed(1),
      spoolDrainedAfterResumeSeconds: +((drained.atMs - resumeAt) / 1000).toFixed(1),
      freshPointAfterResumeSeconds: +((freshPointAt - resumeAt) / 1000).toFixed(1),
      freshPointCapturedAfterResumeSeconds: +((capturedAtMs(freshPoint) - resumeAt) / 1000).toFixed(1),
      alertClearedAfterResumeSeconds: +((clearedAt - resumeAt) / 1000).toFixed(1),
      cutsCommittedDuringOutage: cutsDuring.length,
      transientJournalGapAlerts: gapAlerts.map((a) => `${a.severity} ${a.raisedAt}..${a.clearedAt ?? 'open'}: ${a.message}`),
      recordsAcknowledged: acked.records.length,
      recordsDuringOutage: (samples.peak('records', haltAt, resumeAt) - recordsBefore),
      points: (await (await r.store()).listPoints(r.storeDisk)).length,
      storeSegmentsVerified: verify.segments,
      runtimeSeconds: +((Date.now() - testStart) / 1000).toFixed(1),
    };
    t.diagnostic(`measured: ${JSON.stringify(numbers)}`);
    console.log(`storage-outage: ${JSON.stringify(numbers)}`);
    failed = false;
  } catch (err) {
    throw new Error(`storage outage (seed ${SEED}, replay with LIFEBOAT_FAULT_SEED=${SEED}${rig ? `; process logs kept in ${rig.logPath}` : ''}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  } finally {
    await rig?.close({ keepDir: failed });
    await azurite?.stop();
  }
});
