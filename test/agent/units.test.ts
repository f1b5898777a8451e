import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAgentConfig, parseAgentFileConfig } from '../../src/agent/config.js';
import { MAX_SEGMENT_DATA_BYTES, pieceFlags, piecesOf, type CutPiece } from '../../src/agent/segments.js';
import { TokenBucket } from '../../src/agent/throttle.js';
import type { ChangedExtent } from '../../src/changetracking/tracker.js';
import { SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../../src/format/segment.js';
import { AutoClock, agentConfig } from './fakes.js';

const MiB = 2 ** 20;

async function pieces(extents: ChangedExtent[], max?: number): Promise<CutPiece[]> {
  const out: CutPiece[] = [];
  async function* gen(): AsyncGenerator<ChangedExtent> {
    yield* extents;
  }
  for await (const p of piecesOf(gen(), max)) out.push(p);
  return out;
}

describe('cut pieces', () => {
  it('packs extents into segments of at most 16 MiB, splitting an extent at the boundary, the last marked last', async () => {
    const ps = await pieces([
      { offset: 0, data: Buffer.alloc(10 * MiB, 1) },
      { offset: 20 * MiB, data: Buffer.alloc(16 * MiB, 2) },
      { offset: 40 * MiB, data: Buffer.alloc(4 * MiB, 3) },
    ]);
    assert.equal(MAX_SEGMENT_DATA_BYTES, 16 * MiB);
    assert.deepEqual(
      ps.map((p) => [p.index, p.last, p.dataBytes, p.extents.map((e) => [e.offset / MiB, e.data.length / MiB])]),
      [
        [0, false, 16 * MiB, [[0, 10], [20, 6]]],
        [1, true, 14 * MiB, [[26, 10], [40, 4]]],
      ],
    );
  });

  it('an exact multiple ends on a full last piece; an empty cut is one empty piece', async () => {
    const ps = await pieces([{ offset: 0, data: Buffer.alloc(32 * MiB) }]);
    assert.deepEqual(
      ps.map((p) => [p.last, p.dataBytes]),
      [
        [false, 16 * MiB],
        [true, 16 * MiB],
      ],
    );
    assert.deepEqual(await pieces([]), [{ index: 0, last: true, extents: [], dataBytes: 0 }]);
  });

  it('flags: first without CONTINUES, all but the last PARTIAL, APP_CONSISTENT only on the last of a frozen cut', () => {
    assert.equal(pieceFlags({ index: 0, last: true }, false), 0);
    assert.equal(pieceFlags({ index: 0, last: true }, true), SEGMENT_APP_CONSISTENT);
    assert.equal(pieceFlags({ index: 0, last: false }, true), SEGMENT_PARTIAL);
    assert.equal(pieceFlags({ index: 3, last: false }, true), SEGMENT_PARTIAL | SEGMENT_CONTINUES);
    assert.equal(pieceFlags({ index: 3, last: true }, true), SEGMENT_CONTINUES | SEGMENT_APP_CONSISTENT);
  });
});

describe('token bucket', () => {
  it('paces bytes to the rate over a window, whatever the send sizes, and 0 means no limit', async () => {
    const clock = new AutoClock();
    const bucket = new TokenBucket(clock, MiB);
    const start = clock.now();
    for (const n of [3 * MiB, 100, 64 * 1024, 2 * MiB, 5 * MiB]) await bucket.take(n);
    const seconds = (clock.now() - start) / 1000;
    const total = 3 * MiB + 100 + 64 * 1024 + 7 * MiB;
    assert.ok(Math.abs(total / seconds - MiB) / MiB < 0.01, `${total / seconds} B/s`);
    bucket.setRate(0);
    const t = clock.now();
    await bucket.take(100 * MiB);
    assert.equal(clock.now(), t);
  });
});

describe('agent.json and the vault configuration', () => {
  it('validates agent.json into a frozen object with defaults, naming the bad field', () => {
    const c = parseAgentFileConfig({ disks: [{ name: 'root', tracker: { kind: 'scan', path: '/dev/vda' } }] });
    assert.deepEqual(c.freeze, { mountPoints: [], preScripts: [], postScripts: [], timeoutMs: 10_000 });
    assert.equal(c.maxBytesPerSec, 0);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.disks[0]));
    const bad = (raw: unknown, re: RegExp) => assert.throws(() => parseAgentFileConfig(raw), (e: Error & { code?: string }) => e.code === 'CONFIG_INVALID' && re.test(e.message));
    bad({ disks: [] }, /at least one disk/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'lvm' } }] }, /tracker.kind/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan' } }, { name: 'a', tracker: { kind: 'scan' } }] }, /twice/);
    bad({ disks: [{ name: '../x', tracker: { kind: 'scan' } }] }, /name/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan' } }], freeze: { timeoutMs: 5 } }, /timeoutMs/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan' } }], maxBytesPerSec: -1 }, /maxBytesPerSec/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan' } }], extra: 1 }, /unknown key/);
  });

  it('checks the vault answer before obeying it', () => {
    assert.deepEqual(parseAgentConfig(agentConfig()), agentConfig());
    assert.throws(() => parseAgentConfig({ ...agentConfig(), crashConsistentFrequencySeconds: 0 }), /crashConsistentFrequencySeconds/);
    assert.throws(() => parseAgentConfig({ ...agentConfig(), paused: 'yes' }), /paused/);
  });
});
