/**
 * The acceptance path, through the CLI on a local-folder store:
 * init, two backups, byte-identical restores of both points, a VHD export that
 * qemu-img accepts, an NBD serve that qemu-img converts from, and a guest that
 * boots from a served point through a qcow2 overlay.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { lifeboat, lifeboatServe, stop } from '../helpers/cli.js';
import { sha256File, scribble, writeMixedImage } from '../helpers/images.js';
import { buildGuestImage } from '../helpers/guest.js';
import { bootAndWaitForMarker } from '../helpers/qemu.js';

describe('replication core through the CLI', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let env: Record<string, string>;
  const sums = new Map<string, string>();
  let img: string;
  const size = 48 * 2 ** 20 + 8192;

  before(() => {
    tmp = makeTempDir('cli');
    env = { LIFEBOAT_STORE: `file://${join(tmp.path, 'store')}`, LIFEBOAT_PASSPHRASE: 'cli test passphrase' };
    img = join(tmp.path, 'disk.img');
    writeMixedImage(img, size, 7);
  });
  after(() => tmp.cleanup());

  it('initialises a store and prints a recovery key', () => {
    const r = lifeboat(['store', 'init', '--json'], env);
    assert.equal(r.status, 0, r.stderr);
    const out = r.json();
    assert.match(String(out.recoveryKey), /^([A-Z2-9]{6}-){8}[A-Z2-9]{4}$/);
    assert.equal(out.chunkSizeBytes, 4096);
  });

  it('backs up twice; the second point stores about the size of the change', () => {
    const first = lifeboat(['disk', 'backup', img, '--disk', 'vm1', '--json'], env);
    assert.equal(first.status, 0, first.stderr);
    const a = first.json();
    sums.set(String(a.pointId), sha256File(img));
    scribble(img, size, 64); // 256 KiB of random 4 KiB writes
    const second = lifeboat(['disk', 'backup', img, '--disk', 'vm1', '--json'], env);
    assert.equal(second.status, 0, second.stderr);
    const b = second.json();
    sums.set(String(b.pointId), sha256File(img));
    assert.equal(b.parentPointId, a.pointId);
    assert.ok(Number(b.bytesStored) < 600 * 1024, `second backup stored ${String(b.bytesStored)} bytes for a 256 KiB change`);
    const list = lifeboat(['point', 'list', '--disk', 'vm1', '--json'], env);
    assert.deepEqual((list.json() as unknown as { pointId: string }[]).map((p) => p.pointId), [a.pointId, b.pointId]);
  });

  it('restores both points byte for byte', () => {
    for (const [pointId, sum] of sums) {
      const out = join(tmp.path, `restore-${pointId}.img`);
      const r = lifeboat(['disk', 'restore', pointId, '--to', out, '--json'], env);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(sha256File(out), sum);
    }
  });

  it('exports a VHD that qemu-img reads as the same disk', () => {
    const qemuImg = requireTool('qemu-img', 'qemu-utils');
    const [pointId] = [...sums.keys()].slice(-1) as [string];
    const vhd = join(tmp.path, 'disk.vhd');
    const r = lifeboat(['disk', 'export', pointId, '--format', 'vhd', '--to', vhd, '--json'], env);
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(execFileSync(qemuImg, ['info', '--output=json', vhd], { encoding: 'utf8' })) as { format: string };
    assert.equal(info.format, 'vpc');
    const raw = join(tmp.path, 'from-vhd.raw');
    execFileSync(qemuImg, ['convert', '-O', 'raw', '--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${vhd}`, raw]);
    const restored = join(tmp.path, `restore-${pointId}.img`);
    execFileSync(qemuImg, ['compare', '-f', 'raw', '-F', 'raw', restored, raw]);
  });

  it('serves a point over NBD that qemu-img converts to the same bytes', async () => {
    const qemuImg = requireTool('qemu-img', 'qemu-utils');
    const [pointId, sum] = [...sums.entries()][0] as [string, string];
    const { child, json } = await lifeboatServe(['disk', 'serve', pointId, '--listen', '127.0.0.1:0', '--json'], env);
    try {
      const copy = join(tmp.path, 'nbd-copy.raw');
      execFileSync(qemuImg, ['convert', '-f', 'raw', '-O', 'raw', String(json.uri), copy]);
      assert.equal(sha256File(copy), sum);
    } finally {
      await stop(child);
    }
  });

  it('boots a guest from a served point through a qcow2 overlay', async () => {
    const guest = await buildGuestImage({ dir: tmp.path, payload: 'served-from-lifeboat' });
    const backup = lifeboat(['disk', 'backup', guest.imagePath, '--disk', 'guest', '--json'], env);
    assert.equal(backup.status, 0, backup.stderr);
    const pointId = String(backup.json().pointId);
    const { child, json } = await lifeboatServe(['disk', 'serve', pointId, '--listen', '127.0.0.1:0', '--json'], env);
    try {
      const boot = await bootAndWaitForMarker({ drive: { nbdUri: String(json.uri) }, marker: guest.marker, timeoutMs: 180_000 });
      assert.equal(boot.markerLine, guest.expectedLine);
      console.log(`# boot from served point: marker after ${boot.markerMs} ms`);
    } finally {
      await stop(child);
    }
    const verify = lifeboat(['store', 'verify', '--full', '--json'], env);
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
  });
});
