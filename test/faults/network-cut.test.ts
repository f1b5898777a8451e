/**
 * Network cut: the cable between the protected machine and the process server is
 * pulled for a minute while the disk keeps being written. Two network namespaces joined
 * through a bridge (test/helpers/netns.ts): `lifeboat server` (vault API and built-in
 * process server) in namespace b, `lifeboat agent run` (journal tracker, NBD export on a
 * Unix socket) in namespace a; the test writes records through the export (NBD write +
 * flush) from the host namespace, and reaches the API through a forwarder in b.
 *
 * What a user would notice, and what this test asserts:
 * - during the cut nothing new reaches the vault: no cut is committed, no point captured
 *   after the cut appears, the item's RPO grows; the writer is never held up (the agent
 *   buffers in its change log);
 * - after the cable is back the agent reconnects by itself, ships what piled up as
 *   ordinary incremental cuts (no full compare, the tracker keeps continuity), and a
 *   point captured after the cable came back appears;
 * - the point taken after the writer stopped equals the disk byte for byte, every
 *   acknowledged record is in it, and the store verifies clean.
 *
 * Needs root and iproute2; without them it fails saying so. The cut lasts 60 s of real
 * time; the policy uses the API's shortest crash-consistent frequency (5 s) and RPO
 * threshold (30 s). LIFEBOAT_FAULT_SEED replays a seed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { faultSeed } from './harness.js';
import { NetnsRig, every, processServerFigures, resyncsAfterStart, restorePoint, Sampler, verifyRestored } from './outage-helpers.js';
import { capturedAtMs, sleep, waitUntil } from './replication-harness.js';

const SEED = faultSeed(60_126);
const CUT_MS = 60_000;

test('the network between agent and process server cut for a minute (two namespaces, link down): the agent reconnects and catches up', { timeout: 300_000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (LIFEBOAT_FAULT_SEED=${SEED} replays it)`);
  const testStart = Date.now();
  let rig: NetnsRig | undefined;
  let failed = true;
  try {
    rig = await NetnsRig.start({ name: 'network-cut', seed: SEED, imageBytes: 64 * 2 ** 20, slotCount: 2048, rpoThresholdSeconds: 30, crashConsistentFrequencySeconds: 5 });
    const r = rig;
    r.writer.start();
    const writingFrom = Date.now();
    await r.waitForPoint(writingFrom, 60_000);

    const samples = new Sampler();
    const sampling = every(1000, async () => {
      const item = await r.api('GET', `/api/v1/items/${r.itemId}`);
      const newest = await r.latestPoint();
      samples.add({
        ...processServerFigures(await r.text('/metrics')),
        rpoSeconds: typeof item.rpoSeconds === 'number' ? item.rpoSeconds : Number.NaN,
        newestCapturedAtMs: newest ? capturedAtMs(newest) : Number.NaN,
        records: r.writer.acked.records.length,
      });
    });
    await sleep(2000);
    const recordsBefore = r.writer.acked.records.length;

    // ---- the cut ----
    const cutAt = Date.now();
    await r.link.setLinkDown();
    t.diagnostic(`link down at ${new Date(cutAt).toISOString()}`);
    await sleep(CUT_MS - (Date.now() - cutAt));
    const pointAtUp = await r.latestPoint();
    const eventsAtUp = r.agentEvents();
    const upAt = Date.now();
    await r.link.setLinkUp();
    t.diagnostic(`link up at ${new Date(upAt).toISOString()} after ${((upAt - cutAt) / 1000).toFixed(1)} s`);
    const table = (): string => samples.describe(['rpoSeconds', 'newestCapturedAtMs', 'spooled_segments', 'segments_in_total', 'connected_agents', 'records'], cutAt);

    // Nothing crossed: no cut committed, no point of a moment after the cut, the RPO grew.
    // (A cut captured just before the cable went may have been in flight: 2 s of slack.)
    const committedDuring = eventsAtUp.filter((e) => e.event === 'cut-committed' && Date.parse(e.at) > cutAt + 2000);
    assert.deepEqual(committedDuring.map((e) => e.at), [], 'cuts were committed while the cable was out');
    assert.ok(!pointAtUp || capturedAtMs(pointAtUp) < cutAt + 2000, `a point captured at ${pointAtUp?.capturedAt} appeared while the cable was out`);
    const rpoPeakDuring = samples.peak('rpoSeconds', cutAt, upAt);
    assert.ok(rpoPeakDuring >= 40, `the item's RPO did not grow during the cut (peak ${rpoPeakDuring} s)\n${table()}`);
    assert.ok(eventsAtUp.some((e) => e.event === 'disconnected' && Date.parse(e.at) > cutAt), 'the agent never noticed the cut');
    const recordsDuring = samples.peak('records', cutAt, upAt) - recordsBefore;
    assert.ok(recordsDuring > 100, `the writer was held up during the cut (${recordsDuring} records)`);

    // ---- reconnect and catch up, by itself ----
    const reconnected = await waitUntil('the agent to reconnect', () => r.agentEvents().find((e) => e.event === 'connected' && Date.parse(e.at) > upAt), 90_000, 100);
    const caughtUp = await waitUntil(
      'a cut captured after the link came back to be committed',
      () => r.agentEvents().find((e) => e.event === 'cut-committed' && e.capturedAtMs > upAt),
      120_000,
      100,
    );
    const freshPoint = await r.waitForPoint(upAt, 120_000);
    const freshPointAt = Date.now();
    const rpoRecovered = await waitUntil('the RPO to fall under the threshold', async () => {
      const rpo = (await r.api('GET', `/api/v1/items/${r.itemId}`)).rpoSeconds;
      return typeof rpo === 'number' && rpo < 30 ? { rpo, at: Date.now() } : undefined;
    }, 60_000, 500);
    await sampling.stop();

    // ---- the end state ----
    const acked = await r.writer.stop();
    const stopAt = Date.now();
    const finalPoint = await r.waitForPoint(stopAt, 60_000);
    const disk = await r.writer.readAll();
    const repo = await r.store();
    const restored = await restorePoint(repo, finalPoint);
    assert.ok(restored.equals(disk), `the final point ${finalPoint.pointId} differs from the disk`);
    const report = await verifyRestored(restored, acked, finalPoint);
    assert.equal(report.prefix, acked.records.length, 'the final point holds every acknowledged record');
    assert.deepEqual(resyncsAfterStart(r.agentEvents()), [], 'the agent did a full resync after the cut');
    const fullCuts = r.agentEvents().filter((e) => e.event === 'cut-committed' && e.full);
    assert.equal(fullCuts.length, 1, 'only the initial cut is a full one');
    const verify = await r.verifyStore(true);
    assert.ok(verify.ok, `the store does not verify: ${JSON.stringify(verify.problems.slice(0, 5))}`);

    const numbers = {
      seed: SEED,
      cutSeconds: (upAt - cutAt) / 1000,
      rpoPeakSeconds: samples.peak('rpoSeconds'),
      recordsDuringCut: recordsDuring,
      reconnectedAfterLinkUpSeconds: +((Date.parse(reconnected.at) - upAt) / 1000).toFixed(1),
      firstCutAfterLinkUpCommittedSeconds: +((Date.parse(caughtUp.at) - upAt) / 1000).toFixed(1),
      freshPointAfterLinkUpSeconds: +((freshPointAt - upAt) / 1000).toFixed(1),
      freshPointCapturedAfterLinkUpSeconds: +((capturedAtMs(freshPoint) - upAt) / 1000).toFixed(1),
      rpoUnderThresholdAfterLinkUpSeconds: +((rpoRecovered.at - upAt) / 1000).toFixed(1),
      disconnects: r.agentEvents().filter((e) => e.event === 'disconnected').map((e) => e.code),
      recordsAcknowledged: acked.records.length,
      fullCuts: fullCuts.length,
      points: (await repo.listPoints(r.storeDisk)).length,
      runtimeSeconds: +((Date.now() - testStart) / 1000).toFixed(1),
    };
    t.diagnostic(`measured: ${JSON.stringify(numbers)}`);
    console.log(`network-cut: ${JSON.stringify(numbers)}`);
    failed = false;
  } catch (err) {
    throw new Error(`network cut (seed ${SEED}, replay with LIFEBOAT_FAULT_SEED=${SEED}${rig ? `; process logs kept in ${rig.logPath}` : ''}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  } finally {
    await rig?.close({ keepDir: failed });
  }
});
