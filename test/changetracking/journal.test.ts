/**
 * The journal change tracker: the contract suite; its log and recovery rules
 * (torn tail, damage, boot id, redo, image changed while stopped); and end to
 * end through its NBD export with qemu-io and fio while cuts are taken, and
 * with a SIGKILL of the process that runs it while writes are acknowledged.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { open, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { JournalTracker, ServedJournalTracker, openJournalTracker } from '../../src/changetracking/journal/index.js';
import type { JournalTrackerHandle } from '../../src/changetracking/journal/index.js';
import { openTracker } from '../../src/changetracking/registry.js';
import { isLifeboatError } from '../../src/core/errors.js';
import type { ChangeTracker, Cut } from '../../src/changetracking/tracker.js';
import { NBD_CMD_FLUSH, NBD_CMD_WRITE } from '../../src/nbd/protocol.js';
import { makeTempDir, repoRoot, requireTool } from '../helpers/env.js';
import { startFio } from '../helpers/fio.js';
import { run } from '../nbd/fixtures.js';
import { RawNbdClient } from '../nbd/raw-client.js';
import { trackerContractSuite } from './contract.js';
import { LOG_HEADER_BYTES, RECORD_HEADER_BYTES, RecordType, decodeLogHeader, decodeRecordHeader, encodeLogHeader, encodeRecordHeader, recordCrcMatches } from '../../src/changetracking/journal/log-format.js';
import type { TrackerUnderTest } from './contract.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CONTRACT_SIZE = 256 * KiB + 1536;
let bootSeq = 0;

function fakeBootId(): string {
  return `00000000-0000-0000-0000-${(++bootSeq).toString(16).padStart(12, '0')}`;
}

async function journalUnderTest(): Promise<TrackerUnderTest> {
  const tmp = makeTempDir('journal-contract');
  const imagePath = join(tmp.path, 'disk.raw');
  await writeFile(imagePath, Buffer.alloc(CONTRACT_SIZE));
  const bootId = fakeBootId();
  const make = (): JournalTracker => new JournalTracker({ imagePath, stateDir: join(tmp.path, 'state'), bootId: async () => bootId });
  let tracker = make();
  return {
    get tracker() {
      return tracker;
    },
    sizeBytes: CONTRACT_SIZE,
    write: (offset, data) => tracker.target.write(offset, data, false),
    read: (offset, length) => tracker.target.read(offset, length),
    reopen: async () => {
      await tracker.kill(); // as a killed process: nothing synced, no clean-close mark
      tracker = make();
      return tracker;
    },
    cleanup: async () => {
      await tracker.kill();
      tmp.cleanup();
    },
  };
}

trackerContractSuite('journal', journalUnderTest);

/** Reads a cut to the end and applies it to `replica`; returns the chunks it touched. */
async function applyCut(cut: Cut, replica: Buffer): Promise<Set<number>> {
  const chunks = new Set<number>();
  for await (const e of cut.changes()) {
    e.data.copy(replica, e.offset);
    for (let c = e.offset / 4096; c * 4096 < e.offset + e.data.length; c++) chunks.add(c);
  }
  return chunks;
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}

function assertSame(actual: Buffer, expected: Buffer, what: string): void {
  const at = firstDifference(actual, expected);
  assert.equal(at, -1, `${what}: first difference at byte ${at} (chunk ${Math.floor(at / 4096)})`);
}

/** A tracker over a fresh image in a temp dir, with a boot id the test controls. */
async function fixture(sizeBytes: number): Promise<{
  dir: string;
  imagePath: string;
  stateDir: string;
  boot: { id: string };
  make: () => JournalTracker;
  cleanup: () => void;
}> {
  const tmp = makeTempDir('journal');
  const imagePath = join(tmp.path, 'disk.raw');
  await writeFile(imagePath, '');
  await truncate(imagePath, sizeBytes);
  const boot = { id: fakeBootId() };
  const stateDir = join(tmp.path, 'state');
  return {
    dir: tmp.path,
    imagePath,
    stateDir,
    boot,
    make: () => new JournalTracker({ imagePath, stateDir, bootId: async () => boot.id }),
    cleanup: tmp.cleanup,
  };
}

/** First start: open, full cut committed. Returns the replica (what the vault holds). */
async function firstSync(t: ChangeTracker, sizeBytes: number): Promise<Buffer> {
  const opened = await t.open();
  assert.equal(opened.continuity, 'lost');
  const replica = Buffer.alloc(sizeBytes);
  const cut = await t.cut();
  assert.equal(cut.full, true);
  await applyCut(cut, replica);
  await cut.commit();
  return replica;
}

async function logFiles(stateDir: string): Promise<string[]> {
  return (await readdir(join(stateDir, 'logs'))).filter((n) => n.endsWith('.hrl')).sort();
}

describe('journal change log format, version 1', () => {
  it('encodes the file header and a record byte for byte as docs/nbd.md says (data on disk is forever)', () => {
    const header = encodeLogHeader({ number: 7, imageSizeBytes: 1 << 30, bootId: '1f7d89186e6440b78497ac99cba7ae85', createdAtMs: 1_795_656_000_000 });
    assert.equal(header.length, LOG_HEADER_BYTES);
    // magic, version 1, 64, 0, number 7, size 1 GiB, boot id, created at, 0, CRC-32.
    assert.equal(
      header.toString('hex'),
      '4c4248524c4f4700' + '0100' + '4000' + '00000000' + '0700000000000000' + '0000004000000000' +
        '1f7d89186e6440b78497ac99cba7ae85' + '00227015a2010000' + '00000000' + '64761a9d',
    );
    assert.deepEqual(decodeLogHeader(header), { number: 7, imageSizeBytes: 1 << 30, bootId: '1f7d89186e6440b78497ac99cba7ae85', createdAtMs: 1_795_656_000_000 });
    const payload = Buffer.from('lifeboat');
    const record = encodeRecordHeader(RecordType.WRITE, 1, 4096, payload.length, payload);
    assert.equal(record.length, RECORD_HEADER_BYTES);
    // "HRL1", WRITE, FUA, 0, offset 4096, length 8, payload 8, 0, CRC-32 over header and "lifeboat".
    assert.equal(record.toString('hex'), '48524c31' + '01' + '01' + '0000' + '0010000000000000' + '08000000' + '08000000' + '00000000' + '02380c1a');
    assert.ok(recordCrcMatches(record, payload));
    assert.deepEqual(decodeRecordHeader(record), { type: 1, flags: 1, offset: 4096, length: 8, payloadBytes: 8, crc: record.readUInt32LE(28) });
    const zero = encodeRecordHeader(RecordType.ZERO, 0, 8192, 12288, null);
    assert.equal(zero.toString('hex'), '48524c31020000000020000000000000003000000000000000000000793a6fe0');
    assert.deepEqual(decodeRecordHeader(zero), { type: 2, flags: 0, offset: 8192, length: 12288, payloadBytes: 0, crc: zero.readUInt32LE(28) });
  });

  it('refuses other versions, types and flipped bytes', () => {
    const header = encodeLogHeader({ number: 1, imageSizeBytes: 4096, bootId: '0'.repeat(32), createdAtMs: 0 });
    const v2 = Buffer.from(header);
    v2.writeUInt16LE(2, 8);
    assert.equal(typeof decodeLogHeader(v2), 'string', 'a changed version without a new CRC is a checksum failure');
    const flipped = Buffer.from(header);
    flipped[20] = 1;
    assert.match(decodeLogHeader(flipped) as string, /checksum/);
    const payload = Buffer.alloc(4096, 7);
    const record = encodeRecordHeader(RecordType.WRITE, 0, 0, 4096, payload);
    const badType = Buffer.from(record);
    badType[4] = 9;
    assert.match(decodeRecordHeader(badType) as string, /unknown record type/);
    const badData = Buffer.from(payload);
    badData[4095] = 8;
    assert.equal(recordCrcMatches(record, badData), false);
  });
});

describe('journal tracker: log and recovery rules', () => {
  const SIZE = 4 * MiB;

  it('a torn last record after a kill is dropped; whole records are redone into the image; continuity holds', async () => {
    const f = await fixture(SIZE);
    try {
      let t = f.make();
      const replica = await firstSync(t, SIZE);
      const a = Buffer.alloc(8192, 0xa1);
      const b = Buffer.alloc(4096, 0xb2);
      await t.target.write(64 * KiB, a, false);
      await t.target.write(128 * KiB, b, false);
      await t.kill();
      // The kill came while b's record was being appended: its tail never reached the log,
      // so its image write never happened either.
      const logs = await logFiles(f.stateDir);
      const active = join(f.stateDir, 'logs', logs.at(-1) as string);
      await truncate(active, (await stat(active)).size - 100);
      const fh = await open(f.imagePath, 'r+');
      await fh.write(Buffer.alloc(4096), 0, 4096, 128 * KiB);
      // And a's image write was lost to the kill too: redo must restore it from the log.
      await fh.write(Buffer.alloc(8192), 0, 8192, 64 * KiB);
      await fh.close();

      t = f.make();
      const opened = await t.open();
      assert.equal(opened.continuity, 'continuous', JSON.stringify(opened));
      assertSame(await t.target.read(64 * KiB, 8192), a, 'redone record');
      assertSame(await t.target.read(128 * KiB, 4096), Buffer.alloc(4096), 'torn record not applied');
      const cut = await t.cut();
      assert.equal(cut.full, false);
      assert.deepEqual([...(await applyCut(cut, replica))].sort((x, y) => x - y), [16, 17]);
      await cut.commit();
      assertSame(replica, await readFile(f.imagePath), 'replica after the cut');
      await t.close();
    } finally {
      f.cleanup();
    }
  });

  it('property: a kill at any byte of the active log, between any log write and image write, loses nothing and diverges nowhere', async () => {
    const SMALL = 256 * KiB + 512;
    const write = fc.record({
      offset: fc.integer({ min: 0, max: SMALL - 1 }),
      length: fc.integer({ min: 1, max: 3 * 4096 + 100 }),
      zero: fc.boolean(),
      fill: fc.integer({ min: 1, max: 255 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(write, { minLength: 1, maxLength: 12 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), async (ws, cutAt, appliedShare) => {
        const f = await fixture(SMALL);
        try {
          let t = f.make();
          const replica = await firstSync(t, SMALL);
          const base = await readFile(f.imagePath);
          const clipped = ws.map((w) => ({ ...w, length: Math.min(w.length, SMALL - w.offset) }));
          for (const w of clipped) {
            if (w.zero) await t.target.writeZeroes?.(w.offset, w.length, false);
            else await t.target.write(w.offset, Buffer.alloc(w.length, w.fill), false);
          }
          await t.kill();
          // Where each record ends in the active log (header 64, then 32 + payload per record).
          const ends: number[] = [];
          let at = 64;
          for (const w of clipped) ends.push((at += 32 + (w.zero ? 0 : w.length)));
          const logs = await logFiles(f.stateDir);
          const active = join(f.stateDir, 'logs', logs.at(-1) as string);
          const cutByte = 64 + Math.floor(cutAt * (at - 64 + 1));
          await truncate(active, Math.min(at, cutByte));
          const logged = ends.filter((e) => e <= cutByte).length;
          const applied = Math.floor(appliedShare * (logged + 1)) > logged ? logged : Math.floor(appliedShare * (logged + 1));
          const apply = (img: Buffer, n: number): Buffer => {
            const out = Buffer.from(img);
            for (const w of clipped.slice(0, n)) out.fill(w.zero ? 0 : w.fill, w.offset, w.offset + w.length);
            return out;
          };
          await writeFile(f.imagePath, apply(base, applied)); // the kill fell after `applied` image writes
          t = f.make();
          const opened = await t.open();
          assert.equal(opened.continuity, 'continuous', JSON.stringify(opened));
          const expected = apply(base, logged); // every whole record is in the image after recovery
          assertSame(await readFile(f.imagePath), expected, 'image after recovery');
          const cut = await t.cut();
          await applyCut(cut, replica);
          await cut.commit();
          assertSame(replica, expected, 'replica after the cut');
          await t.close();
        } finally {
          f.cleanup();
        }
      }),
      { numRuns: 40 },
    );
  });

  it('a damaged whole record means lost continuity and a full compare that still converges', async () => {
    const f = await fixture(SIZE);
    try {
      let t = f.make();
      const replica = await firstSync(t, SIZE);
      await t.target.write(0, Buffer.alloc(4096, 0x11), false);
      await t.target.write(8192, Buffer.alloc(4096, 0x22), false);
      await t.kill();
      const logs = await logFiles(f.stateDir);
      const active = join(f.stateDir, 'logs', logs.at(-1) as string);
      const fh = await open(active, 'r+');
      await fh.write(Buffer.from([0x99]), 0, 1, 64 + 32 + 100); // inside the first record's payload
      await fh.close();
      t = f.make();
      const opened = await t.open();
      assert.equal(opened.continuity, 'lost');
      assert.match(opened.reason ?? '', /damaged|checksum/);
      const cut = await t.cut();
      assert.equal(cut.full, true);
      const chunks = await applyCut(cut, replica);
      assert.ok(chunks.has(0) && chunks.has(2), 'the compare finds the written chunks');
      await cut.commit();
      assertSame(replica, await readFile(f.imagePath), 'replica after the full compare');
      await t.kill();
      t = f.make();
      assert.equal((await t.open()).continuity, 'continuous', 'a committed full compare restores continuity');
      await t.close();
    } finally {
      f.cleanup();
    }
  });

  it('boot id: an unclean stop then a reboot is lost; a clean close then a reboot is continuous', async () => {
    const f = await fixture(SIZE);
    try {
      let t = f.make();
      await firstSync(t, SIZE);
      await t.target.write(0, Buffer.alloc(4096, 1), false);
      await t.kill();
      f.boot.id = fakeBootId();
      t = f.make();
      const opened = await t.open();
      assert.equal(opened.continuity, 'lost');
      assert.match(opened.reason ?? '', /boot id/);
      const full = await t.cut();
      assert.equal(full.full, true);
      await applyCut(full, Buffer.alloc(SIZE));
      await full.commit();
      await t.target.write(4096, Buffer.alloc(4096, 2), true);
      await t.close();
      f.boot.id = fakeBootId();
      t = f.make();
      assert.equal((await t.open()).continuity, 'continuous', 'a clean close survives a reboot');
      const cut = await t.cut();
      assert.deepEqual([...(await applyCut(cut, Buffer.alloc(SIZE)))], [1], 'the write before the close is still reported');
      await cut.commit();
      await t.close();
    } finally {
      f.cleanup();
    }
  });

  it('an image written by someone else while the tracker was stopped means lost continuity', async () => {
    const f = await fixture(SIZE);
    try {
      let t = f.make();
      const replica = await firstSync(t, SIZE);
      await t.close();
      await new Promise((r) => setTimeout(r, 20));
      const fh = await open(f.imagePath, 'r+');
      await fh.write(Buffer.alloc(4096, 0x77), 0, 4096, 40960);
      await fh.close();
      t = f.make();
      const opened = await t.open();
      assert.equal(opened.continuity, 'lost');
      assert.match(opened.reason ?? '', /image changed/);
      const cut = await t.cut();
      assert.deepEqual([...(await applyCut(cut, replica))], [10]);
      await cut.commit();
      assertSame(replica, await readFile(f.imagePath), 'replica after the compare');
      await t.close();
    } finally {
      f.cleanup();
    }
  });

  it('a full compare is point-in-time too: writes made while it reads (into data and into holes) do not show', async () => {
    const f = await fixture(SIZE);
    try {
      const t = new JournalTracker({ imagePath: f.imagePath, stateDir: f.stateDir, bootId: async () => f.boot.id, replicaIsEmpty: true });
      assert.equal((await t.open()).continuity, 'lost');
      await t.target.write(0, Buffer.alloc(64 * KiB, 0x31), false);
      await t.target.write(2 * MiB + 100, Buffer.alloc(5000, 0x32), false);
      await t.target.write(SIZE - 4096, Buffer.alloc(4096, 0x33), false);
      const atCut = await readFile(f.imagePath);
      const cut = await t.cut();
      assert.equal(cut.full, true);
      const replica = Buffer.alloc(SIZE);
      let first = true;
      for await (const e of cut.changes()) {
        if (first) {
          // While the compare runs: overwrite data it has not read yet, and fill holes.
          await t.target.write(2 * MiB, Buffer.alloc(12 * KiB, 0xee), false);
          await t.target.write(SIZE - 8192, Buffer.alloc(8192, 0xef), false);
          await t.target.write(1 * MiB, Buffer.alloc(4096, 0xed), false);
          first = false;
        }
        e.data.copy(replica, e.offset);
      }
      await cut.commit();
      assertSame(replica, atCut, 'the full compare shows the disk at cut()');
      const next = await t.cut();
      assert.equal(next.full, false, 'continuity is back after the committed full compare');
      await applyCut(next, replica);
      await next.commit();
      assertSame(replica, await readFile(f.imagePath), 'the next cut carries the writes made during the compare');
      await t.close();
    } finally {
      f.cleanup();
    }
  });

  it('two cut() calls at once: one gets the cut, the other CONFLICT; writes racing the rotation land in exactly one cut', async () => {
    const f = await fixture(SIZE);
    try {
      const t = f.make();
      const replica = await firstSync(t, SIZE);
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 200; i++) writes.push(t.target.write((i % 100) * 8192, Buffer.alloc(4096, 1 + (i % 250)), false));
      const results = await Promise.allSettled([t.cut(), t.cut()]);
      for (let i = 200; i < 400; i++) writes.push(t.target.write((i % 100) * 8192 + 4096, Buffer.alloc(4096, 1 + (i % 250)), false));
      const won = results.filter((r): r is PromiseFulfilledResult<Cut> => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1);
      assert.ok(lost.length === 1 && isLifeboatError(lost[0]?.reason, 'CONFLICT'));
      const cut = (won[0] as PromiseFulfilledResult<Cut>).value;
      await applyCut(cut, replica);
      await cut.commit();
      await Promise.all(writes);
      const next = await t.cut();
      await applyCut(next, replica);
      await next.commit();
      assertSame(replica, await readFile(f.imagePath), 'after both cuts');
      await t.close();
    } finally {
      f.cleanup();
    }
  });

  it('overlapping concurrent writes reach the image in log order, so the cut and the image agree', async () => {
    const f = await fixture(SIZE);
    try {
      const t = f.make();
      const replica = await firstSync(t, SIZE);
      for (let round = 0; round < 5; round++) {
        const writes: Promise<void>[] = [];
        for (let i = 0; i < 64; i++) {
          const offset = (i % 7) * 3000;
          writes.push(t.target.write(offset, Buffer.alloc(5000 + (i % 3) * 4096, i + round * 64 + 1), false));
        }
        await Promise.all(writes);
        const cut = await t.cut();
        await applyCut(cut, replica);
        await cut.commit();
        assertSame(replica, await readFile(f.imagePath), `round ${round}`);
      }
      await t.close();
    } finally {
      f.cleanup();
    }
  });
});

describe('journal tracker end to end through NBD', () => {
  const qemuIo = requireTool('qemu-io', 'qemu-utils');
  requireTool('fio', 'fio');

  async function serve(f: Awaited<ReturnType<typeof fixture>>): Promise<JournalTrackerHandle> {
    return openJournalTracker({
      imagePath: f.imagePath,
      stateDir: f.stateDir,
      bootId: async () => f.boot.id,
      listen: { socketPath: join(f.dir, 'nbd.sock') },
    });
  }

  it('is registered: openTracker builds it from a spec, open() serves the export, close() stops it', async () => {
    const f = await fixture(4 * MiB);
    try {
      const deps = { stateDir: f.stateDir, clock: Date.now, replicaIsEmpty: true };
      await assert.rejects(openTracker({ kind: 'journal', path: f.imagePath }, deps), (err) => isLifeboatError(err, 'CONFIG_INVALID'));
      const t = await openTracker({ kind: 'journal', path: f.imagePath, socketPath: join(f.dir, 'reg.sock') }, deps);
      assert.ok(t instanceof ServedJournalTracker);
      assert.equal(t.kind, 'journal');
      assert.deepEqual(t.capabilities, { pointInTime: true, exactExtents: true });
      assert.equal((await t.open()).continuity, 'lost');
      const first = await t.cut();
      assert.deepEqual([...(await applyCut(first, Buffer.alloc(4 * MiB)))], [], 'an empty replica and an all-zero disk: nothing to ship');
      await first.commit();
      await run(qemuIo, ['-f', 'raw', '-c', 'write -P 0x42 8k 4k', t.uri]);
      const cut = await t.cut();
      assert.deepEqual([...(await applyCut(cut, Buffer.alloc(4 * MiB)))], [2]);
      await cut.commit();
      await t.close();
      await assert.rejects(run(qemuIo, ['-f', 'raw', '-c', 'read 0 4k', `nbd+unix:///disk?socket=${join(f.dir, 'reg.sock')}`]));
    } finally {
      f.cleanup();
    }
  });

  it('ext4 through nbdfuse and a loop device, cuts while files are written: the replica is the same file system', async () => {
    const nbdfuse = requireTool('nbdfuse', 'libnbd-bin');
    const fusermount = requireTool('fusermount', 'fuse');
    const losetup = requireTool('losetup', 'mount');
    const mkfs = requireTool('mkfs.ext4', 'e2fsprogs');
    const fsck = requireTool('fsck.ext4', 'e2fsprogs');
    if (process.getuid?.() !== 0) throw new Error('this test mounts file systems and needs root');
    const SIZE = 96 * MiB;
    const f = await fixture(SIZE);
    const h = await openJournalTracker({
      imagePath: f.imagePath,
      stateDir: f.stateDir,
      bootId: async () => f.boot.id,
      replicaIsEmpty: true,
      listen: { socketPath: join(f.dir, 'nbd.sock') },
    });
    const undo: Array<() => Promise<unknown>> = [];
    try {
      const replica = await firstSync(h.tracker, SIZE);
      const fuseFile = join(f.dir, 'fuse.img');
      writeFileSync(fuseFile, '');
      const fuse: ChildProcess = spawn(nbdfuse, [fuseFile, h.uri], { stdio: 'ignore' });
      undo.push(async () => {
        await run(fusermount, ['-u', fuseFile]).catch(() => undefined);
        fuse.kill();
      });
      const deadline = Date.now() + 15_000;
      while (statSync(fuseFile).size !== SIZE) {
        if (Date.now() > deadline || fuse.exitCode !== null) throw new Error('nbdfuse did not mount');
        await new Promise((r) => setTimeout(r, 50));
      }
      const loop = (await run(losetup, ['-f', '--show', fuseFile])).trim();
      undo.push(() => run(losetup, ['-d', loop]));
      await run(mkfs, ['-q', '-F', loop]);
      const mnt = join(f.dir, 'mnt');
      mkdirSync(mnt);
      await run('mount', [loop, mnt]);
      undo.push(() => run('umount', [mnt]));
      const files = new Map<string, string>();
      let cuts = 0;
      for (let i = 0; i < 12; i++) {
        const body = randomBytes(256 * KiB + i * 4099);
        await writeFile(join(mnt, `f${i}.bin`), body);
        files.set(`f${i}.bin`, createHash('sha256').update(body).digest('hex'));
        if (i % 3 === 1) await run('sync', []);
        const cut = await h.tracker.cut(); // crash-consistent points while the file system is live
        await applyCut(cut, replica);
        await cut.commit();
        cuts++;
      }
      for (const step of undo.splice(0).reverse()) await step();
      const last = await h.tracker.cut();
      await applyCut(last, replica);
      await last.commit();
      assertSame(replica, await readFile(f.imagePath), `replica after ${cuts + 1} cuts`);
      const replicaPath = join(f.dir, 'replica.raw');
      await writeFile(replicaPath, replica);
      await run(fsck, ['-f', '-n', replicaPath]);
      const loop2 = (await run(losetup, ['-f', '--show', '-r', replicaPath])).trim();
      undo.push(() => run(losetup, ['-d', loop2]));
      await run('mount', ['-o', 'ro', loop2, mnt]);
      undo.push(() => run('umount', [mnt]));
      for (const [name, digest] of files) {
        assert.equal(createHash('sha256').update(await readFile(join(mnt, name))).digest('hex'), digest, name);
      }
    } finally {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      await h.close();
      f.cleanup();
    }
  });

  it('qemu-io: each cut shows the disk at cut() even when the same blocks are rewritten before it is read', async () => {
    const SIZE = 64 * MiB;
    const f = await fixture(SIZE);
    const h = await serve(f);
    try {
      const replica = await firstSync(h.tracker, SIZE);
      for (let round = 1; round <= 6; round++) {
        const p = (round * 17) & 0xff;
        const base = round * MiB;
        const before = [
          `write -P ${p} ${base} 64k`,
          `write -P ${p + 1} ${base + 70000} 1000`, // unaligned: a partial chunk
          `write -z ${base + 200 * KiB} 12k`,
          `write -P ${p + 2} ${40 * MiB} 4k`, // the same block every round
          `write -P ${p + 3} ${SIZE - 512} 512`,
        ];
        await run(qemuIo, ['-f', 'raw', ...before.flatMap((c) => ['-c', c]), h.uri]);
        const atCut = await readFile(f.imagePath);
        const cut = await h.tracker.cut();
        // Rewritten after cut() returned, before its changes are read: must not show.
        const after = [`write -P 0xee ${base} 64k`, `write -P 0xef ${base + 69000} 3000`, `write -P 0xed ${40 * MiB} 4k`, `write -P 0xec ${SIZE - 4096} 4k`];
        await run(qemuIo, ['-f', 'raw', ...after.flatMap((c) => ['-c', c]), h.uri]);
        const candidate = Buffer.from(replica);
        await applyCut(cut, candidate);
        assertSame(candidate, atCut, `round ${round}: the cut is the disk at cut()`);
        if (round % 3 === 0) {
          await cut.abort(); // shipped nowhere: the next cut must carry these changes again
        } else {
          await cut.commit();
          candidate.copy(replica);
        }
      }
      const last = await h.tracker.cut();
      await applyCut(last, replica);
      await last.commit();
      await h.close();
      assertSame(replica, await readFile(f.imagePath), 'replica at the end');
    } finally {
      await h.close();
      f.cleanup();
    }
  });

  it('fio random writes (512 B to 1 MiB) while cuts are taken: the replica equals the image when writes stop', async () => {
    const SIZE = 256 * MiB;
    const f = await fixture(SIZE);
    const h = await serve(f);
    try {
      const replica = await firstSync(h.tracker, SIZE);
      const load = startFio({
        target: { nbdUri: h.uri, sizeBytes: SIZE },
        rateMBPerSec: 400,
        durationMs: 6000,
        blockSizeSplit: '512/10:4k/40:16k/20:64k/20:1m/10',
        ioDepth: 16,
        fsyncEveryWrites: 64, // fio's nbd engine turns fsync into NBD_CMD_FLUSH; it has no fdatasync
        seed: 7,
      });
      let cuts = 0;
      let aborted = 0;
      let exited = false;
      void load.done.finally(() => (exited = true)).catch(() => undefined);
      while (!exited) {
        await new Promise((r) => setTimeout(r, 250));
        const cut = await h.tracker.cut();
        const candidate = Buffer.from(replica);
        await applyCut(cut, candidate);
        if (cuts % 4 === 3) {
          await cut.abort();
          aborted++;
        } else {
          await cut.commit();
          candidate.copy(replica);
        }
        cuts++;
      }
      const result = await load.done;
      const last = await h.tracker.cut();
      await applyCut(last, replica);
      await last.commit();
      await h.close();
      assertSame(replica, await readFile(f.imagePath), `after ${cuts} cuts (${aborted} aborted)`);
      // Enough overlap of cuts and writes to mean something, whatever the machine's speed.
      assert.ok(cuts >= 2 && result.writes >= 100, `cuts ${cuts}, writes ${result.writes}`);
      console.log(
        `journal over NBD, fio randwrite 512B-1MiB qd16 with cuts: ${(result.bandwidthBytesPerSec / 1e6).toFixed(1)} MB/s, ${Math.round(result.writeIops)} IOPS`,
      );
    } finally {
      await h.close();
      f.cleanup();
    }
  });

  it('nbdcopy over 4 connections into the export while cuts are taken: replica, image and source agree', async () => {
    const nbdcopy = requireTool('nbdcopy', 'libnbd-bin');
    const SIZE = 128 * MiB;
    const f = await fixture(SIZE);
    const h = await serve(f);
    try {
      const replica = await firstSync(h.tracker, SIZE);
      const source = join(f.dir, 'source.raw');
      const content = randomBytes(SIZE);
      content.fill(0, 16 * MiB, 48 * MiB);
      await writeFile(source, content);
      let done = false;
      const copy = run(nbdcopy, ['--connections=4', '--requests=16', `--request-size=${MiB}`, source, h.uri]);
      copy.then(
        () => (done = true),
        () => (done = true),
      );
      let cuts = 0;
      while (!done) {
        const cut = await h.tracker.cut();
        await applyCut(cut, replica);
        await cut.commit();
        cuts++;
        await new Promise((r) => setTimeout(r, 50));
      }
      await copy;
      const last = await h.tracker.cut();
      await applyCut(last, replica);
      await last.commit();
      assertSame(await readFile(f.imagePath), content, 'image after nbdcopy');
      assertSame(replica, content, `replica after ${cuts + 1} cuts`);
    } finally {
      await h.close();
      f.cleanup();
    }
  });

  it('SIGKILL of the tracker process while writes are acknowledged: after a restart no acknowledged write is missing', async () => {
    const SIZE = 16 * MiB;
    const BLOCKS = 1024;
    const f = await fixture(SIZE);
    const socketPath = join(f.dir, 'nbd.sock');
    // The committed starting point: first full cut, clean close.
    let t = f.make();
    const replica = await firstSync(t, SIZE);
    await t.close();
    const moduleUrl = new URL(`file://${join(repoRoot, 'src/changetracking/journal/index.ts')}`).href;
    const childCode = `
      const { openJournalTracker } = await import(${JSON.stringify(moduleUrl)});
      const h = await openJournalTracker({ imagePath: ${JSON.stringify(f.imagePath)}, stateDir: ${JSON.stringify(f.stateDir)},
        bootId: async () => process.env.BOOT_ID, listen: { socketPath: ${JSON.stringify(socketPath)} } });
      process.stdout.write('READY ' + JSON.stringify(h.opened) + '\\n');
      setInterval(() => {}, 1000);
    `;
    try {
      for (let round = 0; round < 3; round++) {
        const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', childCode], {
          cwd: repoRoot,
          env: { ...process.env, BOOT_ID: f.boot.id },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
        const deadline = Date.now() + 20_000;
        while (!out.includes('READY')) {
          if (Date.now() > deadline || child.exitCode !== null) throw new Error(`tracker child did not start: ${out}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        assert.match(out, /"continuity":"continuous"/, out);

        // Pipelined 4 KiB writes of numbered blocks, a flush every 16; never two writes to one block in flight.
        const c = await RawNbdClient.connect({ socketPath });
        await c.handshake('disk', { structured: true });
        const acked = new Map<number, number>(); // block -> highest acknowledged sequence
        const inFlight = new Map<bigint, { block: number; seq: number } | 'flush'>();
        const busy = new Set<number>();
        let seq = round * 1_000_000;
        let handle = 1n;
        let killed = false;
        const killAt = Date.now() + 300 + Math.floor(Math.random() * 500);
        const send = (): void => {
          while (inFlight.size < 16 && !killed) {
            seq++;
            if (seq % 16 === 0) {
              inFlight.set(handle, 'flush');
              c.request(NBD_CMD_FLUSH, handle++, 0, 0);
              continue;
            }
            let block = (seq * 7919) % BLOCKS;
            while (busy.has(block)) block = (block + 1) % BLOCKS;
            busy.add(block);
            const data = Buffer.alloc(4096);
            for (let i = 0; i < 4096; i += 8) data.writeUInt32LE(seq, i);
            inFlight.set(handle, { block, seq });
            c.request(NBD_CMD_WRITE, handle++, block * 4096, 4096, 0, data);
          }
        };
        send();
        let replies = 0;
        try {
          while (true) {
            if (!killed && Date.now() >= killAt) {
              killed = true;
              child.kill('SIGKILL');
            }
            const reply = await c.reply();
            const what = inFlight.get(reply.handle);
            inFlight.delete(reply.handle);
            const error = reply.kind === 'simple' ? reply.error : 0;
            if (error !== 0) throw new Error(`write failed with ${error}`);
            replies++;
            if (what !== undefined && what !== 'flush') {
              busy.delete(what.block);
              acked.set(what.block, Math.max(acked.get(what.block) ?? 0, what.seq));
            }
            send();
          }
        } catch {
          // The server died mid-stream: everything still in flight is unacknowledged.
        }
        c.destroy();
        await new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
        assert.ok(replies > 100, `only ${replies} replies before the kill`);

        t = f.make();
        const opened = await t.open();
        assert.equal(opened.continuity, 'continuous', `round ${round}: ${JSON.stringify(opened)}`);
        const cut = await t.cut();
        assert.equal(cut.full, false);
        await applyCut(cut, replica);
        await cut.commit();
        const image = await readFile(f.imagePath);
        assertSame(replica, image, `round ${round}: replica after the cut following the kill`);
        for (const [block, s] of acked) {
          const found = replica.readUInt32LE(block * 4096);
          assert.ok(found >= s, `round ${round}: block ${block} holds write ${found}, but write ${s} was acknowledged`);
        }
        await t.close();
      }
    } finally {
      await t.kill();
      f.cleanup();
    }
  });
});
