import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Freezer, type CommandRunner } from '../../src/agent/freeze.js';
import { pieceFlags, piecesOf } from '../../src/agent/segments.js';
import { StateDir } from '../../src/agent/state.js';
import { LifeboatError } from '../../src/core/errors.js';
import { SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../../src/format/segment.js';
import type { OutgoingSegment } from '../../src/protocol/messages.js';
import { Agent, type AgentEvent } from '../../src/agent/agent.js';
import { parseAgentFileConfig } from '../../src/agent/config.js';
import { FakeDisk } from '../../src/changetracking/fake/fake-tracker.js';
import { agentConfig, FakeClock, FakeProcessServer, FakeVault, ITEM_ID, replay, tempDir } from './fakes.js';
import { Harness, STORE_DISK } from './harness.js';

const KiB = 1024;
let h: Harness | undefined;
afterEach(() => {
  h?.cleanup();
  h = undefined;
});

describe('agent: cuts and segments', () => {
  it('ships the first (full) cut as segments numbered from 1 with the cut flags, and the replica equals the disk', async () => {
    h = new Harness({ maxSegmentBytes: 16 * KiB });
    h.fill(0, 40 * KiB);
    h.start();
    await h.untilCommitted(1);
    const segs = h.stored();
    assert.deepEqual(
      segs.map((s) => [s.sequence, s.flags]),
      [
        [1, SEGMENT_PARTIAL],
        [2, SEGMENT_PARTIAL | SEGMENT_CONTINUES],
        [3, SEGMENT_CONTINUES],
      ],
    );
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    assert.equal(h.disk.cuts[0]?.outcome, 'committed');
    const state = new StateDir(h.dir.path).diskState('vda');
    assert.equal(state?.nextSequence, 4);
    assert.equal(state?.inFlight, null);
    assert.equal(state?.lastCommitted?.full, true);
    // The first heartbeat went out before anything was shipped: initial, 0 %.
    assert.equal(h.vault.reports[0]?.disks[0]?.state, 'initial');
    await h.clock.advance(5000);
    const report = h.vault.lastReport?.disks[0];
    assert.equal(report?.state, 'continuous');
    assert.equal(report?.initialPercent, 100);
    assert.equal(report?.ackedSequence, 3);
    assert.equal(report?.lagMs, 0);
    await h.stop();
  });

  it('cuts again every crashConsistentFrequencySeconds, one segment per small cut, and an idle disk still ends a cut', async () => {
    h = new Harness({ config: { crashConsistentFrequencySeconds: 30 } });
    h.fill(0, 8 * KiB);
    h.start();
    await h.untilCommitted(1);
    const written = h.fill(64 * KiB, 4 * KiB);
    await h.clock.advance(29_000);
    assert.equal(h.count('cut-committed'), 1, 'no cut before the interval');
    await h.clock.advance(1_100);
    await h.untilCommitted(2);
    const second = h.stored().at(-1) as OutgoingSegment;
    assert.equal(second.flags, 0);
    assert.deepEqual(
      second.extents.map((e) => [e.offset, e.data.length]),
      [[64 * KiB, 4 * KiB]],
    );
    assert.deepEqual(second.extents[0]?.data, written);
    await h.clock.advance(30_000);
    await h.untilCommitted(3);
    const idle = h.stored().at(-1) as OutgoingSegment;
    assert.equal(idle.sequence, 3);
    assert.deepEqual(idle.extents, []);
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    await h.stop();
  });

  it('keeps at most 8 segments unacknowledged and commits the cut only after the last ACK', async () => {
    h = new Harness({ maxSegmentBytes: 4 * KiB });
    h.fill(0, 200 * KiB); // 50 segments
    h.ps.ackMode = 'manual';
    h.start();
    await h.clock.until(() => (h?.ps.current?.sent.length ?? 0) >= 8, 'the window to fill');
    await h.clock.advance(1000);
    assert.equal(h.ps.current?.sent.length, 8);
    assert.equal(h.ps.maxInFlight, 8);
    h.ps.releaseAcks(3);
    await h.clock.advance(10);
    assert.equal(h.ps.current?.sent.length, 11);
    for (let i = 0; i < 200 && (h.ps.current?.sent.length ?? 0) < 50; i++) {
      h.ps.releaseAcks(1);
      await h.clock.advance(1);
    }
    assert.equal(h.ps.current?.sent.length, 50);
    assert.equal(h.ps.maxInFlight, 8);
    // Everything sent, not everything acknowledged: the cut is still open.
    assert.equal(h.disk.cuts[0]?.outcome, 'open');
    assert.equal(h.count('cut-committed'), 0);
    h.ps.releaseAcks(7);
    await h.clock.advance(10);
    assert.equal(h.disk.cuts[0]?.outcome, 'open');
    assert.equal(new StateDir(h.dir.path).diskState('vda')?.inFlight?.lastSequence, 50, 'the last sequence is persisted before it is sent');
    h.ps.releaseAcks(1);
    await h.untilCommitted(1);
    assert.equal(h.disk.cuts[0]?.outcome, 'committed');
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    await h.stop();
  });

  it('reports lag from the oldest unacknowledged cut and initialPercent from the bytes shipped', async () => {
    h = new Harness({ maxSegmentBytes: 4 * KiB, sizeBytes: 64 * KiB });
    h.fill(0, 64 * KiB); // 16 segments
    h.ps.ackMode = 'manual';
    h.start();
    await h.clock.until(() => (h?.ps.current?.sent.length ?? 0) >= 8, 'the window to fill');
    h.ps.releaseAcks(4);
    await h.clock.advance(10_000);
    const r = h.vault.lastReport?.disks[0];
    assert.equal(r?.state, 'initial');
    assert.equal(r?.initialPercent, 25);
    assert.ok((r?.lagMs ?? 0) >= 5000, `lag ${r?.lagMs}`);
    while (h.count('cut-committed') === 0) {
      h.ps.releaseAcks();
      await h.clock.advance(10);
    }
    await h.clock.advance(5000);
    assert.equal(h.vault.lastReport?.disks[0]?.lagMs, 0);
    assert.equal(h.vault.lastReport?.disks[0]?.initialPercent, 100);
    await h.stop();
  });
});

/** Ships a cut of `h.disk` by hand the way an earlier agent process did, so a restart finds it. */
async function earlierProcess(h: Harness, ackedSegments: number | 'all'): Promise<{ cutId: string; segments: OutgoingSegment[] }> {
  const tracker = h.disk.tracker();
  await tracker.open();
  const cut = await tracker.cut();
  const segments: OutgoingSegment[] = [];
  for await (const p of piecesOf(cut.changes(), 4 * KiB)) {
    segments.push({
      disk: STORE_DISK,
      generation: 1,
      sequence: p.index + 1,
      flags: pieceFlags(p, false),
      diskSizeBytes: cut.sizeBytes,
      capturedAtMs: cut.capturedAtMs,
      extents: p.extents,
    });
  }
  h.ps.preload(STORE_DISK, 1, ackedSegments === 'all' ? segments : segments.slice(0, ackedSegments));
  new StateDir(h.dir.path).saveDiskState('vda', {
    generation: 1,
    nextSequence: 1,
    inFlight: { cutId: cut.id, firstSequence: 1, lastSequence: segments.length, capturedAtMs: cut.capturedAtMs, appConsistent: false, full: cut.full },
    lastCommitted: null,
    lastAppConsistentAtMs: null,
  });
  return { cutId: cut.id, segments };
}

describe('agent: restart recovery', () => {
  it('commits the in-flight cut whose last segment was acknowledged (WELCOME) and continues at ackedSequence + 1 without shipping it again', async () => {
    h = new Harness({ maxSegmentBytes: 4 * KiB });
    h.fill(0, 20 * KiB);
    const { cutId, segments } = await earlierProcess(h, 'all');
    assert.equal(segments.length, 5);
    h.start(); // a new tracker process: the old one's read-to-the-end cut is pending
    await h.clock.until(() => h?.count('recovered') === 1, 'recovery');
    assert.deepEqual(h.of('recovered')[0], { event: 'recovered', disk: 'vda', cutId, outcome: 'commit', nextSequence: 6 });
    assert.equal(h.disk.cuts.find((c) => c.id === cutId)?.outcome, 'committed');
    await h.clock.advance(31_000);
    await h.untilCommitted(1);
    const next = h.stored().slice(5);
    assert.equal(next[0]?.sequence, 6);
    assert.equal(next[0]?.flags & SEGMENT_CONTINUES, 0);
    assert.deepEqual(next[0]?.extents, [], 'nothing changed since: the committed cut is not shipped again');
    assert.equal(h.of('cut-started')[0]?.full, false, 'continuity came back with the commit');
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    await h.stop();
  });

  it('aborts the in-flight cut whose last segment was not acknowledged; its changes come again in a new cut at ackedSequence + 1', async () => {
    h = new Harness({ maxSegmentBytes: 4 * KiB });
    h.fill(0, 20 * KiB);
    const { cutId } = await earlierProcess(h, 3);
    h.start();
    await h.untilCommitted(1);
    assert.deepEqual(h.of('recovered')[0], { event: 'recovered', disk: 'vda', cutId, outcome: 'abort', nextSequence: 4 });
    assert.equal(h.disk.cuts.find((c) => c.id === cutId)?.outcome, 'aborted');
    const again = h.stored().slice(3);
    assert.equal(again[0]?.sequence, 4);
    assert.equal(again[0]?.flags & SEGMENT_CONTINUES, 0, 'the new cut begins afresh: the partial one is abandoned');
    assert.equal(again.length, 5);
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    const replayed = h.replica();
    assert.deepEqual(replayed, h.disk.read(0, h.disk.sizeBytes));
    await h.stop();
  });

  it('resumes after a stop mid-cut (SIGTERM): the cut is aborted cleanly, run() resolves, and the next start ships everything', async () => {
    h = new Harness({ maxSegmentBytes: 4 * KiB });
    h.fill(0, 100 * KiB);
    h.ps.ackMode = 'manual';
    h.start();
    await h.clock.until(() => (h?.ps.current?.sent.length ?? 0) >= 8, 'the window to fill');
    h.ps.releaseAcks(5);
    await h.clock.advance(10);
    const stopping = h.stop();
    await h.clock.advance(10);
    h.ps.releaseAcks(); // the segments in flight are acknowledged during the grace period
    await stopping;
    assert.equal(h.disk.cuts[0]?.outcome, 'aborted');
    const acked = h.ps.ackedSequence(STORE_DISK, 1);
    const state = new StateDir(h.dir.path).diskState('vda');
    assert.equal(state?.inFlight, null);
    assert.equal(state?.nextSequence, acked + 1);
    h.ps.ackMode = 'auto';
    h.start();
    await h.untilCommitted(1);
    assert.equal(h.stored()[acked]?.sequence, acked + 1);
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    await h.stop();
  });
});

describe('agent: the vault and the process server', () => {
  it('pause stops cutting and sending while tracking goes on; resume ships what was written meanwhile', async () => {
    h = new Harness({ config: { crashConsistentFrequencySeconds: 10 } });
    h.fill(0, 8 * KiB);
    h.start();
    await h.untilCommitted(1);
    h.vault.config = { ...h.vault.config, paused: true };
    await h.clock.advance(5_100);
    const before = h.stored().length;
    h.fill(128 * KiB, 8 * KiB);
    await h.clock.advance(120_000);
    assert.equal(h.stored().length, before, 'nothing sent while paused');
    assert.equal(h.vault.lastReport?.disks[0]?.state, 'paused');
    assert.notDeepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    h.vault.config = { ...h.vault.config, paused: false };
    await h.clock.until(() => h!.stored().length > before, 'shipping after resume');
    await h.clock.until(() => h!.replica().equals(h!.disk.read(0, h!.disk.sizeBytes)), 'the replica to catch up');
    await h.stop();
  });

  it('throttles to throttleBytesPerSec (token bucket on bytes sent, measured on the fake clock)', async () => {
    const rate = 256 * KiB;
    h = new Harness({ sizeBytes: 2048 * KiB, maxSegmentBytes: 32 * KiB, config: { throttleBytesPerSec: rate } });
    h.fill(0, 2048 * KiB);
    h.start();
    await h.clock.until(() => h!.count('cut-committed') >= 1, 'the cut', 20);
    const sends = h.ps.sendTimes;
    const first = sends[0] as { at: number };
    const last = sends.at(-1) as { at: number };
    const bytesAfterFirst = sends.slice(1).reduce((n, s) => n + s.bytes, 0);
    const measured = bytesAfterFirst / ((last.at - first.at) / 1000);
    assert.ok(Math.abs(measured - rate) / rate < 0.05, `measured ${measured.toFixed(0)} B/s, want ${rate} ± 5 %`);
    await h.stop();
  });

  it('the lower of the local maxBytesPerSec and the vault throttle wins, and a new throttle applies at the next heartbeat', async () => {
    h = new Harness({ sizeBytes: 1024 * KiB, maxSegmentBytes: 32 * KiB, maxBytesPerSec: 128 * KiB, config: { throttleBytesPerSec: 512 * KiB } });
    h.fill(0, 1024 * KiB);
    h.start();
    await h.clock.until(() => h!.count('cut-committed') >= 1, 'the cut', 20);
    const s = h.ps.sendTimes;
    const measured = s.slice(1).reduce((n, x) => n + x.bytes, 0) / (((s.at(-1)?.at ?? 0) - (s[0]?.at ?? 0)) / 1000);
    assert.ok(Math.abs(measured - 128 * KiB) / (128 * KiB) < 0.05, `measured ${measured.toFixed(0)} B/s`);
    await h.stop();
  });

  it('keeps replicating on the last known config while heartbeats fail', async () => {
    h = new Harness({ config: { crashConsistentFrequencySeconds: 10 } });
    h.vault.failing = new LifeboatError('SERVER_UNREACHABLE', 'vault down', { retryable: true });
    h.fill(0, 8 * KiB);
    h.start();
    await h.untilCommitted(1);
    h.fill(32 * KiB, 4 * KiB);
    await h.clock.advance(11_000);
    await h.untilCommitted(2);
    assert.ok(h.count('heartbeat-failed') >= 2);
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    h.vault.failing = undefined;
    await h.clock.advance(5_100);
    assert.equal(h.vault.lastReport?.disks[0]?.ackedSequence, 2);
    await h.stop();
  });

  it('reconnects with backoff after a network failure mid-cut and ships the aborted cut again from ackedSequence + 1', async () => {
    h = new Harness({ maxSegmentBytes: 4 * KiB });
    h.fill(0, 200 * KiB);
    h.ps.ackMode = 'manual';
    h.start();
    await h.clock.until(() => (h?.ps.current?.sent.length ?? 0) >= 8, 'the window to fill');
    h.ps.releaseAcks(6);
    await h.clock.advance(1);
    h.ps.drop();
    h.ps.down = true;
    h.ps.ackMode = 'auto';
    await h.clock.advance(3_000);
    const drops = h.of('disconnected');
    assert.ok(drops.length >= 2, 'retried while the network was down');
    assert.deepEqual(
      drops.slice(0, 4).map((d) => d.retryInMs),
      [250, 500, 1000, 2000].slice(0, Math.min(4, drops.length)),
    );
    h.ps.down = false;
    await h.untilCommitted(1);
    assert.equal(h.of('recovered')[0]?.outcome, 'abort');
    const stored = h.stored();
    assert.equal(stored[6]?.sequence, 7);
    assert.equal(stored[6]?.flags & SEGMENT_CONTINUES, 0);
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    // Backoff is capped at 5 s.
    h.ps.drop();
    h.ps.down = true;
    await h.clock.advance(60_000);
    assert.ok(h.of('disconnected').every((d) => d.retryInMs <= 5000));
    await h.stop();
  });

  it('SPOOL_FULL: waits and retries, keeping the changes', async () => {
    h = new Harness();
    h.fill(0, 16 * KiB);
    h.ps.spoolFull = true;
    h.start();
    await h.clock.advance(12_000);
    const full = h.of('disconnected').filter((d) => d.code === 'SPOOL_FULL');
    assert.ok(full.length >= 2);
    assert.ok(full.every((d) => d.retryInMs === 5000));
    assert.equal(h.stored().length, 0);
    h.ps.spoolFull = false;
    await h.untilCommitted(1);
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    await h.stop();
  });

  it('GENERATION_FENCED stops the disk and reports the error; a newer generation from the vault starts it again at sequence 1', async () => {
    h = new Harness();
    h.fill(0, 8 * KiB);
    h.ps.fence(STORE_DISK, 2);
    h.start();
    await h.clock.advance(10_000);
    assert.equal(h.stored().length, 0);
    assert.equal(h.of('disk-error')[0]?.code, 'GENERATION_FENCED');
    const r = h.vault.lastReport?.disks[0];
    assert.equal(r?.state, 'error');
    assert.match(r?.lastError ?? '', /^GENERATION_FENCED/);
    assert.equal(h.ps.connections.length, 0);
    h.vault.config = { ...h.vault.config, generation: 2 };
    await h.untilCommitted(1);
    assert.equal(h.stored(2)[0]?.sequence, 1);
    assert.deepEqual(replayOf(h, 2), h.disk.read(0, h.disk.sizeBytes));
    await h.stop();
  });
});

function replayOf(h: Harness, generation: number): Buffer {
  return h.replica(generation);
}

/** A runner that records the commands and answers fsfreeze from a table. */
function recordingRunner(fail: Record<string, number> = {}): CommandRunner & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    run: async (command, args) => {
      const line = [command, ...args].join(' ');
      calls.push(line);
      return { code: fail[line] ?? 0, stderr: fail[line] ? 'refused' : '' };
    },
  };
}

describe('agent: app-consistent cuts', () => {
  it('every appConsistentFrequencyMinutes: freeze, cut, thaw; the last segment carries SEGMENT_APP_CONSISTENT', async () => {
    const runner = recordingRunner();
    h = new Harness({ config: { appConsistentFrequencyMinutes: 1, crashConsistentFrequencySeconds: 3600 } });
    h.start({ freezer: new Freezer({ mountPoints: ['/data'], preScripts: [], postScripts: [], timeoutMs: 10_000 }, h.clock, runner) });
    h.fill(0, 8 * KiB);
    await h.untilCommitted(1); // the initial full cut is a crash cut
    assert.equal(h.of('cut-committed')[0]?.appConsistent, false);
    // No app-consistent point yet: one is taken at once after the full cut, then one a minute.
    await h.untilCommitted(2);
    assert.deepEqual(runner.calls, ['fsfreeze -f /data', 'fsfreeze -u /data']);
    const last = h.stored().at(-1) as OutgoingSegment;
    assert.equal(last.flags & SEGMENT_APP_CONSISTENT, SEGMENT_APP_CONSISTENT);
    assert.equal(h.of('cut-committed')[1]?.appConsistent, true);
    await h.clock.advance(59_000);
    assert.equal(h.count('cut-committed'), 2);
    await h.clock.advance(1_100);
    await h.untilCommitted(3);
    assert.equal(h.of('cut-committed')[2]?.appConsistent, true);
    assert.equal(runner.calls.length, 4);
    await h.stop();
  });

  it('a freeze that fails gives a crash cut and FREEZE_FAILED in the heartbeat', async () => {
    const runner = recordingRunner({ 'fsfreeze -f /data': 1 });
    h = new Harness({ config: { appConsistentFrequencyMinutes: 1, crashConsistentFrequencySeconds: 3600 } });
    h.start({ freezer: new Freezer({ mountPoints: ['/data'], preScripts: [], postScripts: [], timeoutMs: 10_000 }, h.clock, runner) });
    h.fill(0, 8 * KiB);
    await h.untilCommitted(2);
    assert.equal(h.of('cut-committed')[1]?.appConsistent, false);
    assert.equal((h.stored().at(-1) as OutgoingSegment).flags & SEGMENT_APP_CONSISTENT, 0);
    assert.deepEqual(runner.calls, ['fsfreeze -f /data', 'fsfreeze -u /data'], 'a half-done freeze is thawed');
    await h.clock.advance(5_100);
    assert.match(h.vault.lastReport?.disks[0]?.lastError ?? '', /^FREEZE_FAILED/);
    await h.stop();
  });
});

describe('agent: configuration from the vault', () => {
  it('a new process-server address in a heartbeat answer ends the connection and the agent reconnects there', async () => {
    h = new Harness({ config: { crashConsistentFrequencySeconds: 10 } });
    h.fill(0, 8 * KiB);
    h.start();
    await h.untilCommitted(1);
    assert.equal(h.ps.connections.length, 1);
    h.vault.config = { ...h.vault.config, processServer: { host: '10.0.0.9', port: 9444, serverName: 'ps2' } };
    await h.clock.advance(5_100);
    await h.clock.until(() => h!.ps.connections.length === 2, 'a second connection');
    assert.deepEqual(h.ps.current?.request.processServer, { host: '10.0.0.9', port: 9444, serverName: 'ps2' });
    h.fill(64 * KiB, 4 * KiB);
    await h.clock.advance(10_100);
    await h.untilCommitted(2);
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    assert.deepEqual(new StateDir(h.dir.path).config()?.processServer.port, 9444, 'the new config is kept for the next start');
    await h.stop();
  });

  it('a shorter crashConsistentFrequencySeconds from the vault applies at once', async () => {
    h = new Harness({ config: { crashConsistentFrequencySeconds: 3600 } });
    h.start();
    await h.untilCommitted(1);
    h.vault.config = { ...h.vault.config, crashConsistentFrequencySeconds: 2 };
    await h.clock.advance(5_100);
    await h.clock.advance(2_100);
    assert.ok(h.count('cut-committed') >= 2);
    await h.stop();
  });
});

describe('agent: several disks', () => {
  it('ships every disk over one connection, each with its own numbering, and fences only the disk the process server names', async () => {
    const clock = new FakeClock();
    const disks = { a: new FakeDisk({ sizeBytes: 64 * KiB, clock: clock.now }), b: new FakeDisk({ sizeBytes: 128 * KiB, clock: clock.now }) };
    disks.a.write(0, Buffer.alloc(8 * KiB, 1));
    disks.b.write(64 * KiB, Buffer.alloc(8 * KiB, 2));
    const ps = new FakeProcessServer(clock.now);
    const vault = new FakeVault(agentConfig({ disks: [{ name: 'a', storeDisk: `${ITEM_ID}.a` }, { name: 'b', storeDisk: `${ITEM_ID}.b` }] }));
    const dir = tempDir('agent-2');
    const events: AgentEvent[] = [];
    const agent = new Agent({
      stateDir: dir.path,
      config: parseAgentFileConfig({ disks: [{ name: 'a', tracker: { kind: 'qemu' } }, { name: 'b', tracker: { kind: 'qemu' } }] }),
      initialConfig: vault.config,
      identity: { machineId: 'machine-1', itemId: ITEM_ID, credential: 'c' },
      vault,
      connect: ps.connect,
      openTracker: async (d) => disks[d.name as 'a' | 'b'].tracker(),
      clock,
      onEvent: (e) => events.push(e),
    });
    const stop = new AbortController();
    let done = false;
    const running = agent.run(stop.signal).then(() => (done = true));
    try {
      await clock.until(() => events.filter((e) => e.event === 'cut-committed').length >= 2, 'both disks');
      assert.equal(ps.connections.length, 1);
      assert.deepEqual(
        ps.current?.request.disks.map((d) => d.disk),
        [`${ITEM_ID}.a`, `${ITEM_ID}.b`],
      );
      assert.deepEqual(replay(ps.stored(`${ITEM_ID}.a`, 1), 64 * KiB).bytes, disks.a.read(0, 64 * KiB));
      assert.deepEqual(replay(ps.stored(`${ITEM_ID}.b`, 1), 128 * KiB).bytes, disks.b.read(0, 128 * KiB));
      assert.equal(ps.stored(`${ITEM_ID}.b`, 1)[0]?.sequence, 1);
      ps.fence(`${ITEM_ID}.b`, 2);
      ps.drop();
      disks.a.write(0, Buffer.alloc(4 * KiB, 9));
      await clock.advance(40_000);
      assert.equal(agent.status().disks.find((d) => d.name === 'b')?.fenced, true);
      assert.equal(agent.status().disks.find((d) => d.name === 'a')?.fenced, false);
      assert.deepEqual(ps.current?.request.disks.map((d) => d.disk), [`${ITEM_ID}.a`]);
      assert.deepEqual(replay(ps.stored(`${ITEM_ID}.a`, 1), 64 * KiB).bytes, disks.a.read(0, 64 * KiB));
    } finally {
      stop.abort();
      await clock.until(() => done, 'stop');
      await running;
      dir.cleanup();
    }
  });
});

describe('agent: tracker failures', () => {
  it('a tracker that fails while its changes are read: the cut is aborted, the tracker reopened, the disk compared again; nothing acknowledged is lost', async () => {
    h = new Harness({ maxSegmentBytes: 4 * KiB, config: { crashConsistentFrequencySeconds: 10 } });
    h.fill(0, 16 * KiB);
    h.start();
    await h.untilCommitted(1);
    h.fill(100 * KiB, 12 * KiB);
    h.disk.failNextCut({ during: 'changes' });
    await h.clock.advance(10_100);
    await h.clock.until(() => h!.count('cut-aborted') === 1, 'the failed cut to be aborted');
    assert.equal(h.of('disk-error')[0]?.code, 'TRACKER_FAILED');
    await h.clock.advance(5_100);
    assert.match(h.vault.lastReport?.disks[0]?.lastError ?? '', /^TRACKER_FAILED/);
    await h.clock.advance(5_000);
    await h.untilCommitted(2);
    const stored = h.stored();
    assert.deepEqual(
      stored.map((s) => s.sequence),
      stored.map((_, i) => i + 1),
      'numbering stays contiguous across the aborted cut',
    );
    assert.deepEqual(h.replica(), h.disk.read(0, h.disk.sizeBytes));
    h.disk.failNextCut({ during: 'cut' });
    h.fill(200 * KiB, 4 * KiB);
    await h.clock.advance(10_100);
    await h.clock.advance(10_100);
    await h.clock.until(() => h!.replica().equals(h!.disk.read(0, h!.disk.sizeBytes)), 'the replica to catch up after a failed cut()');
    await h.stop();
  });
});

describe('agent: app-consistent rounds over several disks', () => {
  it('one freeze covers a cut of every disk: their last segments carry SEGMENT_APP_CONSISTENT and one capture time', async () => {
    const clock = new FakeClock();
    const disks = { a: new FakeDisk({ sizeBytes: 64 * KiB, clock: clock.now }), b: new FakeDisk({ sizeBytes: 64 * KiB, clock: clock.now }) };
    disks.a.write(0, Buffer.alloc(8 * KiB, 1));
    disks.b.write(0, Buffer.alloc(8 * KiB, 2));
    const ps = new FakeProcessServer(clock.now);
    const vault = new FakeVault(
      agentConfig({
        appConsistentFrequencyMinutes: 1,
        crashConsistentFrequencySeconds: 3600,
        disks: [
          { name: 'a', storeDisk: `${ITEM_ID}.a` },
          { name: 'b', storeDisk: `${ITEM_ID}.b` },
        ],
      }),
    );
    const runner = recordingRunner();
    const dir = tempDir('agent-app');
    const events: AgentEvent[] = [];
    const agent = new Agent({
      stateDir: dir.path,
      config: parseAgentFileConfig({ disks: [{ name: 'a', tracker: { kind: 'qemu' } }, { name: 'b', tracker: { kind: 'qemu' } }] }),
      initialConfig: vault.config,
      identity: { machineId: 'machine-1', itemId: ITEM_ID, credential: 'c' },
      vault,
      connect: ps.connect,
      openTracker: async (d) => disks[d.name as 'a' | 'b'].tracker(),
      clock,
      freezer: new Freezer({ mountPoints: ['/', '/var/lib/db'], preScripts: [], postScripts: [], timeoutMs: 10_000 }, clock, runner),
      onEvent: (e) => events.push(e),
    });
    const stop = new AbortController();
    let done = false;
    const running = agent.run(stop.signal).then(() => (done = true));
    const committed = () => events.filter((e): e is Extract<AgentEvent, { event: 'cut-committed' }> => e.event === 'cut-committed');
    try {
      await clock.until(() => committed().filter((c) => c.appConsistent).length >= 2, 'an app-consistent cut of each disk');
      assert.deepEqual(runner.calls, ['fsfreeze -f /', 'fsfreeze -f /var/lib/db', 'fsfreeze -u /var/lib/db', 'fsfreeze -u /'], 'one freeze for both disks');
      const lastA = ps.stored(`${ITEM_ID}.a`, 1).at(-1) as OutgoingSegment;
      const lastB = ps.stored(`${ITEM_ID}.b`, 1).at(-1) as OutgoingSegment;
      assert.equal(lastA.flags & SEGMENT_APP_CONSISTENT, SEGMENT_APP_CONSISTENT);
      assert.equal(lastB.flags & SEGMENT_APP_CONSISTENT, SEGMENT_APP_CONSISTENT);
      assert.equal(lastA.capturedAtMs, lastB.capturedAtMs);
      await clock.advance(61_000);
      await clock.until(() => committed().filter((c) => c.appConsistent).length >= 4, 'the next round');
      assert.equal(runner.calls.length, 8, 'again one freeze for both');
    } finally {
      stop.abort();
      await clock.until(() => done, 'stop');
      await running;
      dir.cleanup();
    }
  });
});
