/**
 * A file system on a writable export, the way a user without /dev/nbd gets one:
 * nbdfuse turns the export into a file, a loop device turns that into a block
 * device, mkfs.ext4 + mount + file writes + umount, then fsck must find the file
 * system clean — in the backing image itself, after the server is gone.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileBlockTarget } from '../../src/nbd/file-target.js';
import { startNbdServer } from '../../src/nbd/server.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { run } from './fixtures.js';

const MiB = 1024 * 1024;

async function waitFor(condition: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('ext4 on a writable export through nbdfuse and a loop device', () => {
  const nbdfuse = requireTool('nbdfuse', 'libnbd-bin');
  const fusermount = requireTool('fusermount', 'fuse');
  const losetup = requireTool('losetup', 'mount');
  const mkfs = requireTool('mkfs.ext4', 'e2fsprogs');
  const fsck = requireTool('fsck.ext4', 'e2fsprogs');
  const mount = requireTool('mount', 'mount');
  const umount = requireTool('umount', 'mount');
  if (process.getuid?.() !== 0) throw new Error('this test mounts file systems and needs root');
  const tmp = makeTempDir('nbd-fuse');
  const cleanups: Array<() => Promise<unknown>> = [];

  after(async () => {
    for (const step of cleanups.reverse()) await step().catch(() => {});
    tmp.cleanup();
  });

  it('mkfs, mount, write files, umount: fsck finds the backing image clean and the files intact', async () => {
    const imagePath = join(tmp.path, 'disk.raw');
    await writeFile(imagePath, '');
    await truncate(imagePath, 128 * MiB);
    const target = await FileBlockTarget.open(imagePath);
    const server = await startNbdServer({ exports: { disk: target }, listen: { socketPath: join(tmp.path, 'nbd.sock') } });
    cleanups.push(() => target.close(), () => server.close());

    const fuseFile = join(tmp.path, 'fuse.img');
    writeFileSync(fuseFile, '');
    const fuse: ChildProcess = spawn(nbdfuse, [fuseFile, server.uri('disk')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let fuseErr = '';
    fuse.stderr?.on('data', (d: Buffer) => (fuseErr += d.toString()));
    cleanups.push(async () => {
      await run(fusermount, ['-u', fuseFile]);
      fuse.kill();
    });
    await waitFor(() => statSync(fuseFile).size === 128 * MiB || fuse.exitCode !== null, 'nbdfuse to mount');
    assert.equal(fuse.exitCode, null, `nbdfuse exited: ${fuseErr}`);

    const loop = (await run(losetup, ['-f', '--show', fuseFile])).trim();
    cleanups.push(() => run(losetup, ['-d', loop]));
    await run(mkfs, ['-q', '-F', loop]);
    const mnt = join(tmp.path, 'mnt');
    mkdirSync(mnt);
    await run(mount, [loop, mnt]);
    const files = new Map<string, string>();
    try {
      for (let i = 0; i < 20; i++) {
        const body = randomBytes(64 * 1024 + i * 4099);
        await writeFile(join(mnt, `file-${i}.bin`), body);
        files.set(`file-${i}.bin`, createHash('sha256').update(body).digest('hex'));
      }
      await run('sync', []);
    } finally {
      await run(umount, [mnt]);
    }
    await run(losetup, ['-d', loop]);
    cleanups.pop();
    await run(fusermount, ['-u', fuseFile]);
    cleanups.pop();
    await new Promise<void>((resolve) => (fuse.exitCode !== null ? resolve() : fuse.once('exit', () => resolve())));
    await server.close();
    await target.close();
    cleanups.length = 0;

    // The backing image alone: fsck -n must exit 0 (clean), and the files must read back.
    await run(fsck, ['-f', '-n', imagePath]);
    const loop2 = (await run(losetup, ['-f', '--show', '-r', imagePath])).trim();
    cleanups.push(() => run(losetup, ['-d', loop2]));
    await run(mount, ['-o', 'ro', loop2, mnt]);
    cleanups.push(() => run(umount, [mnt]));
    for (const [name, digest] of files) {
      assert.equal(createHash('sha256').update(await readFile(join(mnt, name))).digest('hex'), digest, name);
    }
  });
});
