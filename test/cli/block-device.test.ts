/**
 * Backup from and restore to real block devices (loop devices over image
 * files): the source size comes from the device, and a restore to a device
 * overwrites old contents, zero ranges included.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { lifeboat } from '../helpers/cli.js';
import { seededBytes, sha256File, writeMixedImage } from '../helpers/images.js';

describe('block devices', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  const loops: string[] = [];
  let losetup: string;
  const attach = (file: string): string => {
    const dev = execFileSync(losetup, ['-f', '--show', file], { encoding: 'utf8' }).trim();
    loops.push(dev);
    return dev;
  };

  before(() => {
    losetup = requireTool('losetup', 'mount');
    tmp = makeTempDir('blockdev');
  });
  after(() => {
    for (const dev of loops) execFileSync(losetup, ['-d', dev]);
    tmp.cleanup();
  });

  it('backs up a loop device and restores onto another, replacing what was there', () => {
    const env = { LIFEBOAT_STORE: `file://${join(tmp.path, 'store')}`, LIFEBOAT_PASSPHRASE: 'block devices' };
    assert.equal(lifeboat(['store', 'init'], env).status, 0);
    const size = 24 * 2 ** 20;
    const srcFile = join(tmp.path, 'src.img');
    writeMixedImage(srcFile, size, 5);
    const src = attach(srcFile);
    const backup = lifeboat(['disk', 'backup', src, '--disk', 'loopdisk', '--json'], env);
    assert.equal(backup.status, 0, backup.stderr);
    assert.equal(backup.json().diskSizeBytes, size);

    const dstFile = join(tmp.path, 'dst.img');
    writeFileSync(dstFile, seededBytes(size, 99)); // old data everywhere, also where the point has zeros
    const dst = attach(dstFile);
    const restore = lifeboat(['disk', 'restore', String(backup.json().pointId), '--to', dst, '--json'], env);
    assert.equal(restore.status, 0, restore.stderr);
    assert.equal(sha256File(dst), sha256File(srcFile));

    const smallFile = join(tmp.path, 'small.img');
    writeFileSync(smallFile, Buffer.alloc(2 ** 20));
    const small = attach(smallFile);
    const tooSmall = lifeboat(['disk', 'restore', String(backup.json().pointId), '--to', small, '--json'], env);
    assert.equal(tooSmall.status, 9, tooSmall.stdout);
    assert.equal((tooSmall.json().error as { code: string }).code, 'SIZE_MISMATCH');
  });
});
