/**
 * kill -9 during continuous replication, with the real processes (replication-harness.ts):
 * `lifeboat agent run` (journal tracker, NBD export written by a record writer) and
 * `lifeboat server` (vault + built-in process server + replica processor), and a
 * standalone `lifeboat process-server run`, each killed with SIGKILL at random moments
 * (some aimed: a cut in flight, the disk lock held by the replica processor, segments
 * acknowledged but not uploaded), many times, while acknowledged writes keep coming.
 *
 * After every kill and restart, the next recovery point (captured after the restart)
 * holds every record acknowledged before its capture time and is crash consistent (a
 * prefix of the writes); replication resumes without a full compare (the tracker keeps
 * continuity, no full cut after the first); at the end the final point equals the disk
 * byte for byte and the store verifies clean, every chunk read.
 *
 * The moments come from a seeded RNG; the seed is printed and LIFEBOAT_FAULT_SEED replays it.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Rng, faultSeed } from './harness.js';
import { ReplicationRig, capturedAtMs, sleep, waitUntil, type PointCheck } from './replication-harness.js';

const AGENT_KILLS = 10;
const SERVER_KILLS = 8;
const PROCESS_SERVER_KILLS = 7;
/** The standalone process server's kill aimed at acknowledged segments not yet uploaded. */
const SPOOL_ROUND = 3;
const LOCK_ROUND = 2;
/** Server kills aimed at a state by round number; the others land at blind moments. */
const AIMED_SERVER_KILLS: Readonly<Record<number, (rig: ReplicationRig) => { what: string; seen: () => boolean }>> = {
  // The vault dies holding the disk lock: the restarted vault must take it over, not wait for its TTL.
  [LOCK_ROUND]: (rig) => ({ what: 'the replica processor holding the disk lock', seen: () => rig.diskLocked() }),
  // The process server dies with segments acknowledged to the agent but not uploaded: its spool recovery uploads them.
  5: (rig) => ({ what: 'a segment acknowledged and still in the spool', seen: () => rig.spooledSegments().length > 0 }),
};

interface Iteration {
  readonly i: number;
  readonly afterMs: number;
  readonly downMs: number;
  /** Kill at the first moment after `afterMs` that this state is seen (polled every 2 ms), not at a blind moment. */
  readonly aim?: { readonly what: string; readonly seen: () => boolean };
}

/** Fault tests can fail on a seed: every assertion message names it so it can be replayed. */
function tag(seed: number, what: string): string {
  return `[LIFEBOAT_FAULT_SEED=${seed}] ${what}`;
}

/**
 * The end of every test: writes stop, a point captured after the last acknowledgment
 * equals the disk (read through the export) byte for byte and holds every record, and
 * the store verifies clean with every chunk read.
 */
async function finalChecks(rig: ReplicationRig, seed: number): Promise<void> {
  const acked = await rig.writer.stop();
  const last = acked.records.at(-1);
  assert.ok(last, tag(seed, 'records were acknowledged'));
  const point = await rig.waitForPoint({ capturedAfterMs: last.ackedAtMs, timeoutMs: 60_000 });
  const disk = await rig.writer.readAll();
  const restored = await rig.readPoint(point);
  assert.equal(restored.length, disk.length, tag(seed, 'the final point has the size of the disk'));
  assert.ok(restored.equals(disk), tag(seed, `the final point ${point.pointId} equals the disk byte for byte`));
  const check = await rig.checkPoint(point, acked);
  assert.equal(check.report.prefix, acked.records.length, tag(seed, 'the final point holds every acknowledged record'));
  const report = await rig.verifyStore(true);
  assert.ok(report.ok, tag(seed, `store verify: ${JSON.stringify(report.problems)}`));
  assert.ok(report.points >= 1 && report.full, tag(seed, 'store verify read the points, fully'));
}

/** The agent's heartbeat as the vault recorded it: the disk replicates continuously. */
async function heartbeatContinuous(rig: ReplicationRig, seed: number): Promise<void> {
  await waitUntil(
    tag(seed, 'a heartbeat with the disk in continuous replication'),
    async () => {
      const a = await rig.api('GET', `/api/v1/items/${rig.itemId}/agent`);
      const disks = a.disks as { name: string; state: string }[];
      return disks.length === 1 && disks[0]?.state === 'continuous';
    },
    30_000,
    250,
  );
}

/**
 * One fault round: let records flow for a random moment, kill, stay down a random while,
 * restart, then check the first point captured after the restart.
 */
async function round(
  rig: ReplicationRig,
  seed: number,
  it: Iteration,
  kill: () => Promise<void>,
  restart: () => Promise<void>,
  log: string[],
): Promise<PointCheck & { readonly leftBehind: boolean }> {
  await sleep(it.afterMs);
  if (it.aim) await waitUntil(tag(seed, `round ${it.i}: ${it.aim.what}`), it.aim.seen, 30_000, 2);
  const before = rig.writer.acked.records.length;
  await kill();
  const killedAt = Date.now();
  // The aimed state outlived the process (a lock never released, segments never uploaded): the restart must deal with it.
  const leftBehind = it.aim?.seen() ?? false;
  await sleep(it.downMs);
  await restart();
  const restartedAt = Date.now();
  // Writes go on after the restart (the writer reconnected if the export went away).
  await rig.writer.waitForRecords(10, 60_000);
  const point = await rig.waitForPoint({ capturedAfterMs: restartedAt, timeoutMs: 60_000 });
  let check: PointCheck;
  try {
    check = await rig.checkPoint(point);
  } catch (err) {
    throw new Error(tag(seed, `round ${it.i} (kill ${it.afterMs} ms in, down ${it.downMs} ms): point ${point.pointId}: ${String(err)}\nlogs: ${rig.logPath}`), { cause: err });
  }
  log.push(
    `round ${it.i}: killed after ${it.afterMs} ms${it.aim ? ` then ${it.aim.what}${leftBehind ? ' (left behind)' : ''}` : ''} (${before} records acknowledged), down ${it.downMs} ms, ` +
      `point ${point.pointId} captured ${capturedAtMs(point) - killedAt} ms after the kill holds records 1..${check.report.prefix}`,
  );
  return { ...check, leftBehind };
}

describe('replication: kill -9 of the agent, the server and a standalone process server at random moments', { timeout: 420_000 }, () => {
  it(`the agent, killed ${AGENT_KILLS} times while records are written: every acknowledged record in the next point, no full resync`, async (t) => {
    const seed = faultSeed(Math.floor(Math.random() * 2 ** 31));
    t.diagnostic(`LIFEBOAT_FAULT_SEED=${seed}`);
    const rng = new Rng(seed);
    const rig = await ReplicationRig.start({ name: 'rep-kill-agent', seed });
    let ok = false;
    const log: string[] = [];
    try {
      rig.writer.start();
      await rig.writer.waitForRecords(50);
      let lastPrefix = 0;
      for (let i = 0; i < AGENT_KILLS; i++) {
        // Up to 2.5 cut intervals in: kills land in cuts being taken, shipped, committed, and between them.
        const it: Iteration = {
          i,
          afterMs: rng.int(2500),
          downMs: rng.int(800),
          // Every third kill lands while a cut is in flight (sent, not all acknowledged or not committed).
          ...(i % 3 === 2 ? { aim: { what: 'a cut in flight', seen: () => (rig.agentDiskState()?.inFlight ?? null) !== null } } : {}),
        };
        const check = await round(rig, seed, it, () => rig.killAgent(), () => rig.startAgent(), log);
        assert.ok(check.report.prefix >= lastPrefix, tag(seed, `round ${i}: the point went back from record ${lastPrefix} to ${check.report.prefix}`));
        lastPrefix = check.report.prefix;
      }
      assert.equal(rig.agentRuns.length, AGENT_KILLS + 1);
      assert.deepEqual(rig.fullResyncs(), [], tag(seed, 'replication resumed after every kill without a full compare'));
      for (const { run, events } of rig.agentEvents().slice(1)) {
        const opened = events.find((e) => e.event === 'tracker-opened');
        assert.equal(opened?.event === 'tracker-opened' ? opened.continuity : undefined, 'continuous', tag(seed, `agent run ${run}: the journal kept continuity`));
      }
      assert.ok(rig.writer.failures > 0, tag(seed, 'the kills did cut writes in flight (the writer saw its export go away)'));
      await heartbeatContinuous(rig, seed);
      await finalChecks(rig, seed);
      for (const line of log) t.diagnostic(line);
      t.diagnostic(`${rig.writer.acked.records.length} records acknowledged, ${rig.writer.failures} writes cut by kills, ${rig.writer.connections} connections`);
      ok = true;
    } finally {
      await rig.close({ keepDir: !ok });
    }
  });

  it(`the server (vault + process server), killed ${SERVER_KILLS} times and restarted on its data dir: the agent reconnects by itself, no acknowledged record lost, no full resync`, async (t) => {
    const seed = faultSeed(Math.floor(Math.random() * 2 ** 31));
    t.diagnostic(`LIFEBOAT_FAULT_SEED=${seed}`);
    const rng = new Rng(seed);
    const rig = await ReplicationRig.start({ name: 'rep-kill-server', seed });
    let ok = false;
    const log: string[] = [];
    try {
      rig.writer.start();
      await rig.writer.waitForRecords(50);
      let lastPrefix = 0;
      let staleLocks = 0;
      for (let i = 0; i < SERVER_KILLS; i++) {
        // Spread over segments being spooled, uploaded, and points being processed; down long enough for the agent's backoff to grow.
        const aimAt = AIMED_SERVER_KILLS[i];
        const it: Iteration = { i, afterMs: rng.int(3000), downMs: rng.int(2000), ...(aimAt ? { aim: aimAt(rig) } : {}) };
        const check = await round(rig, seed, it, () => rig.killServer(), () => rig.startServer(), log);
        if (i === LOCK_ROUND && check.leftBehind) staleLocks++;
        assert.ok(check.report.prefix >= lastPrefix, tag(seed, `round ${i}: the point went back from record ${lastPrefix} to ${check.report.prefix}`));
        lastPrefix = check.report.prefix;
      }
      if (staleLocks > 0) {
        const takeovers = readFileSync(rig.logPath, 'utf8').split('taking over the disk lock of a journal-process that is gone').length - 1;
        assert.ok(takeovers >= staleLocks, tag(seed, `the restarted vault took over the lock its killed predecessor left (${takeovers} takeovers logged)`));
      }
      assert.equal(rig.agentRuns.length, 1, 'the agent was never restarted');
      assert.ok(rig.agent?.running, tag(seed, 'the agent outlived every server kill'));
      assert.equal(rig.writer.failures, 0, tag(seed, 'no write to the disk failed while the server was down'));
      const connects = rig.agentEvents()[0]?.events.filter((e) => e.event === 'connected').length ?? 0;
      assert.ok(connects >= SERVER_KILLS + 1, tag(seed, `the agent reconnected after every kill (${connects} connections)`));
      assert.deepEqual(rig.fullResyncs(), [], tag(seed, 'replication resumed after every kill without a full compare'));
      await heartbeatContinuous(rig, seed);
      await finalChecks(rig, seed);
      for (const line of log) t.diagnostic(line);
      t.diagnostic(`${rig.writer.acked.records.length} records acknowledged, agent connected ${connects} times`);
      ok = true;
    } finally {
      await rig.close({ keepDir: !ok });
    }
  });

  it(`a standalone process server, killed ${PROCESS_SERVER_KILLS} times and restarted on its spool: the agent reconnects by itself, no acknowledged record lost, no full resync`, async (t) => {
    const seed = faultSeed(Math.floor(Math.random() * 2 ** 31));
    t.diagnostic(`LIFEBOAT_FAULT_SEED=${seed}`);
    const rng = new Rng(seed);
    const rig = await ReplicationRig.start({ name: 'rep-kill-ps', seed, standaloneProcessServer: true });
    let ok = false;
    const log: string[] = [];
    try {
      const agentRow = await rig.api('GET', `/api/v1/items/${rig.itemId}`);
      assert.equal(agentRow.processServerId, rig.processServerId, 'the item replicates through the standalone process server');
      rig.writer.start();
      await rig.writer.waitForRecords(50);
      let lastPrefix = 0;
      for (let i = 0; i < PROCESS_SERVER_KILLS; i++) {
        const it: Iteration = {
          i,
          afterMs: rng.int(3000),
          downMs: rng.int(2000),
          ...(i === SPOOL_ROUND ? { aim: { what: 'a segment acknowledged and still in the spool', seen: () => rig.spooledSegments().length > 0 } } : {}),
        };
        const check = await round(rig, seed, it, () => rig.killProcessServer(), () => rig.startProcessServer(), log);
        assert.ok(check.report.prefix >= lastPrefix, tag(seed, `round ${i}: the point went back from record ${lastPrefix} to ${check.report.prefix}`));
        lastPrefix = check.report.prefix;
      }
      assert.equal(rig.agentRuns.length, 1, 'the agent was never restarted');
      assert.ok(rig.server?.running && rig.agent?.running, tag(seed, 'the vault and the agent outlived every process-server kill'));
      assert.equal(rig.writer.failures, 0, tag(seed, 'no write to the disk failed while the process server was down'));
      const connects = rig.agentEvents()[0]?.events.filter((e) => e.event === 'connected').length ?? 0;
      assert.ok(connects >= PROCESS_SERVER_KILLS + 1, tag(seed, `the agent reconnected after every kill (${connects} connections)`));
      assert.deepEqual(rig.fullResyncs(), [], tag(seed, 'replication resumed after every kill without a full compare'));
      await heartbeatContinuous(rig, seed);
      await finalChecks(rig, seed);
      for (const line of log) t.diagnostic(line);
      t.diagnostic(`${rig.writer.acked.records.length} records acknowledged, agent connected ${connects} times`);
      ok = true;
    } finally {
      await rig.close({ keepDir: !ok });
    }
  });
});
