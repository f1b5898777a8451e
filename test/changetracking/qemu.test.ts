/**
 * The qemu change tracker against a real qemu-storage-daemon: writes go in
 * through the daemon's writable NBD export (qemu-io, as a guest would write),
 * the tracker cuts through QMP and reads its point-in-time view over NBD. A
 * replica buffer takes every committed cut and must equal the disk at the cut.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isLifeboatError } from '../../src/core/errors.js';
import { QmpClient } from '../../src/changetracking/qemu/qmp.js';
import { openQemuTracker } from '../../src/changetracking/qemu/qemu-tracker.js';
import { openTracker } from '../../src/changetracking/registry.js';
import type { ChangedExtent, ChangeTracker, Cut } from '../../src/changetracking/tracker.js';
import { NbdClient } from '../../src/nbd/client.js';
import { makeTempDir } from '../helpers/env.js';
import { qemuTools, startQsd } from '../helpers/qsd.js';
import type { Qsd } from '../helpers/qsd.js';
import { trackerContractSuite } from './contract.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 4096;

interface Rig {
  readonly dir: string;
  qsd: Qsd;
  readonly stateDir: string;
  tracker(): Promise<ChangeTracker>;
  /** The disk as it is now, read through the writable export. */
  readDisk(): Promise<Buffer>;
  restartQsd(how: 'clean' | 'kill'): Promise<void>;
  cleanup(): Promise<void>;
}

async function rig(format: 'qcow2' | 'raw', sizeBytes = 16 * MiB): Promise<Rig> {
  qemuTools(); // fails with the package name when QEMU is missing
  const tmp = makeTempDir(`qemu-tracker-${format}`);
  const stateDir = join(tmp.path, 'state');
  let qsd = await startQsd({ dir: tmp.path, format, sizeBytes });
  const trackers: ChangeTracker[] = [];
  const r: Rig = {
    dir: tmp.path,
    get qsd() {
      return qsd;
    },
    set qsd(q) {
      qsd = q;
    },
    stateDir,
    tracker: async () => {
      const t = await openQemuTracker({
        qmpSocket: qsd.qmpSocket,
        node: qsd.node,
        workDir: join(tmp.path, 'work'),
        nbdSocket: qsd.nbdSocket,
        stateDir,
        timeoutMs: 20_000,
      });
      trackers.push(t);
      return t;
    },
    readDisk: async () => {
      const c = await NbdClient.connect({ target: { socketPath: qsd.nbdSocket }, exportName: 'rw' });
      try {
        return await c.read(0, c.sizeBytes);
      } finally {
        await c.close();
      }
    },
    restartQsd: async (how) => {
      if (how === 'clean') await qsd.stop();
      else await qsd.kill();
      qsd = await startQsd({ dir: tmp.path, format, sizeBytes });
    },
    cleanup: async () => {
      for (const t of trackers) await t.close().catch(() => undefined);
      await qsd.stop().catch(() => qsd.kill());
      tmp.cleanup();
    },
  };
  return r;
}

async function drain(cut: Cut): Promise<ChangedExtent[]> {
  const out: ChangedExtent[] = [];
  for await (const e of cut.changes()) out.push({ offset: e.offset, data: Buffer.from(e.data) });
  return out;
}

function applyTo(replica: Buffer, extents: readonly ChangedExtent[]): void {
  for (const e of extents) e.data.copy(replica, e.offset);
}

function ranges(extents: readonly ChangedExtent[]): Array<[number, number]> {
  return extents.map((e) => [e.offset, e.data.length]);
}

function assertSame(replica: Buffer, disk: Buffer, message: string): void {
  if (replica.equals(disk)) return;
  let i = 0;
  while (replica[i] === disk[i]) i++;
  assert.fail(`${message}: replica differs from the disk first at byte ${i} (chunk ${Math.floor(i / CHUNK)})`);
}

describe('QMP client', () => {
  const tmp = makeTempDir('qmp');
  let qsd: Qsd;
  after(async () => {
    await qsd?.stop();
    tmp.cleanup();
  });

  it("returns results, reports QEMU's error class and description, and delivers events", async () => {
    qsd = await startQsd({ dir: tmp.path, format: 'qcow2', sizeBytes: MiB });
    const qmp = await QmpClient.connect({ socketPath: qsd.qmpSocket });
    try {
      assert.ok(qmp.version !== null, 'greeting carries the version');
      const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', { flat: true });
      assert.ok(nodes.some((n) => n['node-name'] === 'disk0'));
      await assert.rejects(qmp.execute('block-dirty-bitmap-add', { node: 'nope', name: 'b' }), (err) => {
        assert.ok(isLifeboatError(err, 'TRACKER_FAILED'));
        assert.equal(err.details.qmpClass, 'GenericError');
        assert.match(err.message, /block-dirty-bitmap-add: GenericError: .*nope/);
        return true;
      });
      await assert.rejects(qmp.execute('no-such-command'), (err) => isLifeboatError(err, 'TRACKER_FAILED') && err.details.qmpClass === 'CommandNotFound');
      // Concurrent commands are matched by id.
      const [a, b] = await Promise.all([qmp.execute('query-block-exports'), qmp.execute('query-block-jobs')]);
      assert.ok(Array.isArray(a) && Array.isArray(b));
      await qmp.execute('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'disk0', name: 'e1' });
      const deleted = qmp.waitForEvent('BLOCK_EXPORT_DELETED', (d) => d.id === 'e1', 5000);
      await qmp.execute('block-export-del', { id: 'e1' });
      assert.equal((await deleted).data.id, 'e1');
    } finally {
      await qmp.close();
      await qmp.close();
    }
  });

  it('a QMP peer that never answers ends in TRACKER_FAILED within the timeout', async () => {
    const path = join(tmp.path, 'silent.sock');
    const server = createServer((s) => s.write('{"QMP": {"version": {}, "capabilities": []}}\n'));
    await new Promise<void>((r) => server.listen(path, () => r()));
    try {
      const started = Date.now();
      await assert.rejects(QmpClient.connect({ socketPath: path, timeoutMs: 300 }), (err) => isLifeboatError(err, 'TRACKER_FAILED') && /within 300 ms/.test((err as Error).message));
      assert.ok(Date.now() - started < 3000);
      await assert.rejects(QmpClient.connect({ socketPath: join(tmp.path, 'none.sock') }), (err) => isLifeboatError(err, 'TRACKER_FAILED'));
    } finally {
      server.close();
    }
  });
});

describe('qemu tracker with qemu-storage-daemon', () => {
  it('cuts are point-in-time and exact; committed cuts rebuild the disk; abort brings changes back', async (t) => {
    const r = await rig('qcow2');
    try {
      const tracker = await r.tracker();
      assert.deepEqual(tracker.capabilities, { pointInTime: true, exactExtents: true });
      const opened = await tracker.open();
      assert.equal(opened.continuity, 'lost');
      assert.match(opened.reason ?? '', /first start/);
      await r.qsd.io(['write -P 0x11 0 64k', 'write -P 0x22 5M 8k']);

      const replica = Buffer.alloc(16 * MiB);
      const c0 = await tracker.cut();
      assert.equal(c0.full, true);
      const atC0 = await r.readDisk();
      applyTo(replica, await drain(c0));
      await c0.commit();
      assertSame(replica, atC0, 'after the first (full) cut');

      // Incremental and exact: only what was written, chunk-rounded.
      await r.qsd.io(['write -P 0x33 8k 4k', 'write -P 0x44 1M 12k', 'write -P 0x55 10M 3']);
      const c1 = await tracker.cut();
      assert.equal(c1.full, false);
      assert.equal(c1.estimatedBytes, 4096 + 12288 + 4096);
      const atC1 = await r.readDisk();
      // Written after cut(), before the changes are read: must not show in c1.
      await r.qsd.io(['write -P 0x66 8k 4k', 'write -P 0x77 12M 4k']);
      const e1 = await drain(c1);
      assert.deepEqual(ranges(e1), [
        [8192, 4096],
        [MiB, 12288],
        [10 * MiB, 4096],
      ]);
      assert.ok(e1[0]?.data.every((b) => b === 0x33), 'the cut shows the data as of cut(), not the later write');
      applyTo(replica, e1);
      await c1.commit();
      assertSame(replica, atC1, 'after cut 1 (point in time)');

      // The writes made during c1 belong to c2; abort it and they come again with newer ones.
      const c2 = await tracker.cut();
      assert.deepEqual(ranges(await drain(c2)), [
        [8192, 4096],
        [12 * MiB, 4096],
      ]);
      await c2.abort();
      await c2.abort();
      await r.qsd.io(['write -z 5M 4k']);
      const c3 = await tracker.cut();
      const atC3 = await r.readDisk();
      const e3 = await drain(c3);
      assert.deepEqual(ranges(e3), [
        [8192, 4096],
        [5 * MiB, 4096],
        [12 * MiB, 4096],
      ]);
      assert.ok(e3[1]?.data.every((b) => b === 0), 'zeroed range reported with zero data');
      applyTo(replica, e3);
      await c3.commit();
      assertSame(replica, atC3, 'after the cut following an abort');

      // Cut latency: open view (overlay, transaction, export, NBD connect, bitmap status) and commit.
      const times: number[] = [];
      for (let i = 0; i < 10; i++) {
        await r.qsd.io([`write -P 0x${(0x80 + i).toString(16)} ${i * 64}k 4k`]);
        const started = performance.now();
        const c = await tracker.cut();
        times.push(performance.now() - started);
        applyTo(replica, await drain(c));
        await c.commit();
      }
      assertSame(replica, await r.readDisk(), 'after the latency cuts');
      times.sort((a, b) => a - b);
      t.diagnostic(`cut() latency over 10 cuts: median ${times[5]?.toFixed(1)} ms, max ${times[9]?.toFixed(1)} ms`);
      await assert.rejects(tracker.cut().then(async (c) => {
        try {
          await tracker.cut();
        } finally {
          await c.abort();
        }
      }), (err) => isLifeboatError(err, 'CONFLICT'));
    } finally {
      await r.cleanup();
    }
  });

  it('an agent restart (new tracker on the same daemon) is continuous; an interrupted cut is reported pending', async () => {
    const r = await rig('raw');
    try {
      const t1 = await r.tracker();
      await t1.open();
      await r.qsd.io(['write -P 0x11 0 64k']);
      const replica = Buffer.alloc(16 * MiB);
      const c0 = await t1.cut();
      applyTo(replica, await drain(c0));
      await c0.commit();
      await r.qsd.io(['write -P 0x22 2M 8k']);
      await t1.close();

      const t2 = await r.tracker();
      assert.deepEqual(await t2.open(), { continuity: 'continuous' });
      await r.qsd.io(['write -P 0x33 3M 4k']);
      const c1 = await t2.cut();
      assert.equal(c1.full, false);
      const e1 = await drain(c1);
      assert.deepEqual(ranges(e1), [
        [2 * MiB, 8192],
        [3 * MiB, 4096],
      ]);
      // The agent dies after reading the cut, before commit.
      await t2.close();

      const t3 = await r.tracker();
      const reopened = await t3.open();
      assert.equal(reopened.continuity, 'continuous');
      assert.equal(reopened.pendingCutId, c1.id);
      await t3.settle(c1.id, 'commit');
      await t3.settle(c1.id, 'commit');
      applyTo(replica, e1);
      await r.qsd.io(['write -P 0x44 4M 4k']);
      const c2 = await t3.cut();
      assert.deepEqual(ranges(await drain(c2)).map(([o]) => o), [4 * MiB], 'the settled cut is not reported again');
      await c2.abort();
      await t3.close();

      // Dies again with c2 unread: its changes come back after the restart.
      const t4 = await r.tracker();
      const again = await t4.open();
      assert.equal(again.pendingCutId, undefined);
      const c3 = await t4.cut();
      const e3 = await drain(c3);
      assert.deepEqual(ranges(e3), [[4 * MiB, 4096]]);
      applyTo(replica, e3);
      await c3.commit();
      assertSame(replica, await r.readDisk(), 'after the restarts');
    } finally {
      await r.cleanup();
    }
  });

  it('a clean daemon restart keeps a persistent (qcow2) bitmap: continuous', async () => {
    const r = await rig('qcow2');
    try {
      const t1 = await r.tracker();
      await t1.open();
      const c0 = await t1.cut();
      await drain(c0);
      await c0.commit();
      await r.qsd.io(['write -P 0x21 6M 4k']);
      await t1.close();
      await r.restartQsd('clean');
      const t2 = await r.tracker();
      assert.deepEqual(await t2.open(), { continuity: 'continuous' });
      const c1 = await t2.cut();
      assert.deepEqual(ranges(await drain(c1)), [[6 * MiB, 4096]]);
      await c1.commit();
    } finally {
      await r.cleanup();
    }
  });

  for (const format of ['qcow2', 'raw'] as const) {
    it(`SIGKILL of the daemon (${format}) means lost; the full compare ships only the chunks that differ`, async () => {
      const r = await rig(format);
      try {
        let t1 = await r.tracker();
        await t1.open();
        await r.qsd.io(['write -P 0x11 0 1M', 'write -P 0x12 9M 64k']);
        const replica = Buffer.alloc(16 * MiB);
        const c0 = await t1.cut();
        applyTo(replica, await drain(c0));
        await c0.commit();
        if (format === 'qcow2') {
          // A clean restart stores the bitmap in the image; loaded again, it is marked in use, so the kill leaves it inconsistent.
          await t1.close();
          await r.restartQsd('clean');
          t1 = await r.tracker();
          assert.equal((await t1.open()).continuity, 'continuous');
        }
        // Written after the last commit, then the daemon is killed.
        await r.qsd.io(['write -P 0x13 4k 4k', 'write -P 0x14 7M 8k', 'write -z 9M 4k']);
        await t1.close();
        await r.restartQsd('kill');

        const t2 = await r.tracker();
        const opened = await t2.open();
        assert.equal(opened.continuity, 'lost');
        assert.match(opened.reason ?? '', format === 'qcow2' ? /inconsistent/ : /missing/);
        await r.qsd.io(['write -P 0x15 15M 4k']);
        const c1 = await t2.cut();
        assert.equal(c1.full, true);
        const e1 = await drain(c1);
        assert.deepEqual(ranges(e1), [
          [4096, 4096],
          [7 * MiB, 8192],
          [9 * MiB, 4096],
          [15 * MiB, 4096],
        ]);
        applyTo(replica, e1);
        await c1.commit();
        assertSame(replica, await r.readDisk(), 'after the full compare');
        await t2.close();

        // Continuity is back: the next tracker is continuous and incremental.
        const t3 = await r.tracker();
        assert.deepEqual(await t3.open(), { continuity: 'continuous' });
        const c2 = await t3.cut();
        assert.equal(c2.full, false);
        assert.deepEqual(await drain(c2), []);
        await c2.commit();
      } finally {
        await r.cleanup();
      }
    });
  }
});

describe('qemu tracker when QEMU dies under it', () => {
  it('a cut open while the daemon is killed fails with TRACKER_FAILED; open() on the restarted daemon says lost', async () => {
    const r = await rig('raw', 4 * MiB);
    try {
      const t = await r.tracker();
      await t.open();
      const c0 = await t.cut();
      await drain(c0);
      await c0.commit();
      await r.qsd.io(['write -P 0x42 64k 4k']);
      const c1 = await t.cut();
      await r.restartQsd('kill');
      await assert.rejects(drain(c1).then(() => c1.commit()), (err) => isLifeboatError(err, 'TRACKER_FAILED'));
      await assert.rejects(t.cut(), (err) => isLifeboatError(err, 'TRACKER_FAILED') || isLifeboatError(err, 'CONFLICT'));
      await t.close();
      const t2 = await r.tracker();
      const opened = await t2.open();
      assert.equal(opened.continuity, 'lost');
      const c2 = await t2.cut();
      assert.equal(c2.full, true);
      assert.ok((await drain(c2)).some((e) => e.offset === 64 * KiB), 'the write is found by the full compare');
      await c2.commit();
    } finally {
      await r.cleanup();
    }
  });
});

describe('qemu tracker on a QEMU without an NBD server', () => {
  it('starts the NBD server on its private socket and cuts through it', async () => {
    const tmp = makeTempDir('qemu-tracker-nonbd');
    const qsd = await startQsd({ dir: tmp.path, format: 'qcow2', sizeBytes: 4 * MiB, nbd: false });
    const nbdSocket = join(tmp.path, 'private-nbd.sock');
    const t = await openQemuTracker({ qmpSocket: qsd.qmpSocket, node: qsd.node, workDir: join(tmp.path, 'work'), nbdSocket, stateDir: join(tmp.path, 'state') });
    const qmp = await QmpClient.connect({ socketPath: qsd.testQmpSocket });
    try {
      await t.open();
      // The guest's writes, through an export on the server the tracker started.
      await qmp.execute('block-export-add', { type: 'nbd', id: 'rw', 'node-name': 'disk0', name: 'rw', writable: true });
      const c0 = await t.cut();
      await drain(c0);
      await c0.commit();
      const w = await NbdClient.connect({ target: { socketPath: nbdSocket }, exportName: 'rw' });
      await w.write(128 * KiB, Buffer.alloc(8192, 7));
      await w.close();
      const c1 = await t.cut();
      assert.deepEqual(ranges(await drain(c1)), [[128 * KiB, 8192]]);
      await c1.commit();
    } finally {
      await qmp.close();
      await t.close();
      await qsd.stop();
      tmp.cleanup();
    }
  });
});

describe('qemu tracker through the registry', () => {
  it('builds from a spec; a missing option stops start-up; an empty replica gets no zeros', async () => {
    const r = await rig('raw', 4 * MiB);
    try {
      const deps = { stateDir: join(r.dir, 'reg-state'), clock: () => 1234, replicaIsEmpty: true };
      await assert.rejects(openTracker({ kind: 'qemu', node: 'disk0' }, deps), (err) => isLifeboatError(err, 'CONFIG_INVALID'));
      const t = await openTracker({ kind: 'qemu', qmpSocket: r.qsd.qmpSocket, node: 'disk0', nbdSocket: r.qsd.nbdSocket }, deps);
      try {
        assert.equal(t.kind, 'qemu');
        assert.equal((await t.open()).continuity, 'lost');
        await r.qsd.io(['write -P 0x5a 1M 4k']);
        const c = await t.cut();
        assert.equal(c.capturedAtMs, 1234);
        assert.deepEqual(ranges(await drain(c)), [[MiB, 4096]], 'only the written chunk, no zeros');
        await c.commit();
      } finally {
        await t.close();
      }
    } finally {
      await r.cleanup();
    }
  });
});

trackerContractSuite(
  'qemu',
  async () => {
    const r = await rig('qcow2', 1 * MiB);
    let rw: NbdClient;
    let current: ChangeTracker;
    try {
      rw = await NbdClient.connect({ target: { socketPath: r.qsd.nbdSocket }, exportName: 'rw' });
      current = await r.tracker();
    } catch (err) {
      await r.cleanup();
      throw err;
    }
    return {
      tracker: current,
      sizeBytes: 1 * MiB,
      write: async (offset, data) => {
        await rw.write(offset, data);
        await rw.flush();
      },
      read: (offset, length) => rw.read(offset, length),
      // QEMU serves one client per monitor: the abandoned tracker's connection must go, as a dead process's would.
      reopen: async () => {
        await current.close();
        current = await r.tracker();
        return current;
      },
      cleanup: async () => {
        await rw.close();
        await r.cleanup();
      },
    };
  },
  { numRuns: 8 },
);
