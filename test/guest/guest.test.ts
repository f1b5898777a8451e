/**
 * Proves the boot harness itself: a disk built by buildGuestImage boots under
 * QEMU (TCG) straight from a file and from a read-only NBD export through a
 * qcow2 overlay, and a disk that cannot boot is reported as such. Later tests
 * replace qemu-nbd with Lifeboat's own NBD server.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { copyFile, open, stat } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { buildGuestImage, sha256File, type GuestImage } from '../helpers/guest.js';
import { BootError, bootAndWaitForMarker } from '../helpers/qemu.js';

const BOOT_TIMEOUT_MS = 120_000;
const BLOB = 'recovered-bytes-'.repeat(64);

describe('guest boot harness', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let image: GuestImage;

  before(async () => {
    tmp = makeTempDir('guest');
    image = await buildGuestImage({
      dir: tmp.path,
      payload: 'payload-from-disk-7f3a',
      dataFiles: { 'data/blob.txt': BLOB },
    });
  });
  after(() => tmp.cleanup());

  it('reuses the cached image for the same spec', async () => {
    const again = await buildGuestImage({
      dir: tmp.path,
      payload: 'payload-from-disk-7f3a',
      dataFiles: { 'data/blob.txt': BLOB },
    });
    assert.equal(again.fromCache, true);
    assert.equal(again.imagePath, image.imagePath);
    assert.equal(again.sha256, image.sha256);
    assert.equal(await sha256File(again.imagePath), image.sha256);
    assert.equal((await stat(again.imagePath)).size, 64 * 1024 * 1024);
  });

  it('boots the raw image through an overlay and prints the payload read from the disk', async (t) => {
    const result = await bootAndWaitForMarker({
      drive: { file: image.imagePath, format: 'raw' },
      marker: image.marker,
      timeoutMs: BOOT_TIMEOUT_MS,
    });
    assert.equal(result.markerLine, image.expectedLine);
    assert.match(result.consoleLog, new RegExp(`kernel ${image.kernelRelease}`));
    assert.match(result.consoleLog, /root=\/dev\/nvme0n1p1/);
    assert.equal(await sha256File(image.imagePath), image.sha256, 'the source image must not be written');
    t.diagnostic(`raw boot: marker after ${result.markerMs} ms, QEMU exited after ${result.elapsedMs} ms`);
  });

  it('boots from a read-only qemu-nbd export through a local qcow2 overlay; the image is unchanged', async (t) => {
    const server = await serveReadOnly(image.imagePath, 'recovered');
    try {
      const result = await bootAndWaitForMarker({
        drive: { nbdUri: `nbd://127.0.0.1:${server.port}/recovered` },
        overlayPath: `${tmp.path}/nbd-overlay.qcow2`,
        marker: image.marker,
        timeoutMs: BOOT_TIMEOUT_MS,
      });
      assert.equal(result.markerLine, image.expectedLine);
      // The guest wrote (ext4 mounted rw, journal, remount): those writes landed in the overlay.
      assert.ok((await stat(`${tmp.path}/nbd-overlay.qcow2`)).size > 0);
      t.diagnostic(`nbd boot: marker after ${result.markerMs} ms, QEMU exited after ${result.elapsedMs} ms`);
    } finally {
      await server.stop();
    }
    assert.equal(await sha256File(image.imagePath), image.sha256, 'the NBD source image must not be written');
  });

  it('rejects with the console log and kills QEMU when the disk cannot boot', async () => {
    const broken = `${tmp.path}/broken.raw`;
    await copyFile(image.imagePath, broken);
    const fh = await open(broken, 'r+');
    await fh.write(Buffer.alloc(512), 0, 512, 0); // no MBR: SeaBIOS finds nothing to boot
    await fh.close();
    const started = Date.now();
    await assert.rejects(
      bootAndWaitForMarker({ drive: { file: broken, format: 'raw' }, marker: image.marker, timeoutMs: 10_000 }),
      (err: unknown) => {
        assert.ok(err instanceof BootError);
        assert.match(err.message, /did not print "LIFEBOAT-GUEST-BOOTED" within 10000 ms/);
        return true;
      },
    );
    assert.ok(Date.now() - started < 60_000);
    assert.deepEqual(qemuProcessesUsing(broken), [], 'QEMU must be killed when the boot fails');
  });

  it('runs the workload hook before the marker, and withholds the marker when it fails', async () => {
    const ok = await buildGuestImage({
      dir: tmp.path,
      marker: 'WORKLOAD-GUEST-UP',
      dataFiles: { 'data/in.txt': 'input-9c1' },
      workload: 'echo "workload saw $(cat /data/in.txt) on $(ls /dev/nvme0n1p1)"; echo written > /data/out.txt; sync',
    });
    const result = await bootAndWaitForMarker({
      drive: { file: ok.imagePath, format: 'raw' },
      marker: ok.marker,
      timeoutMs: BOOT_TIMEOUT_MS,
    });
    const workloadAt = result.consoleLog.indexOf('workload saw input-9c1 on /dev/nvme0n1p1');
    assert.ok(workloadAt >= 0, 'workload output missing');
    assert.ok(workloadAt < result.consoleLog.indexOf(ok.expectedLine), 'workload must run before the marker');

    const failing = await buildGuestImage({ dir: tmp.path, marker: 'WORKLOAD-GUEST-UP', workload: 'false' });
    await assert.rejects(
      bootAndWaitForMarker({ drive: { file: failing.imagePath, format: 'raw' }, marker: failing.marker, timeoutMs: BOOT_TIMEOUT_MS }),
      (err: unknown) => err instanceof BootError && /workload FAILED/.test(err.consoleLog) && /without printing/.test(err.message),
    );
  });
});

/** Command lines of running qemu-system processes that mention `path`. */
function qemuProcessesUsing(path: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue; // exited while we looked
    }
    if (cmdline.includes('qemu-system') && cmdline.includes(path)) found.push(`${pid}: ${cmdline}`);
  }
  return found;
}

/** Serves `file` read-only over NBD on a loopback TCP port with qemu-nbd. */
async function serveReadOnly(file: string, name: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const qemuNbd = requireTool('qemu-nbd', 'qemu-utils');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      qemuNbd,
      ['-r', '-t', '-f', 'raw', '--shared=4', '-b', '127.0.0.1', '-p', String(port), '-x', name, file],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const stop = (): Promise<void> => stopProcess(child);
    try {
      await waitForListen(port, child, 10_000);
      return { port, stop };
    } catch (err) {
      await stop();
      // Another process may have taken the port between freePort() and bind.
      if (attempt < 3 && /in use/i.test(stderr)) continue;
      throw new Error(`qemu-nbd did not start: ${stderr.trim()}`, { cause: err });
    }
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function waitForListen(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited with status ${child.exitCode}`);
    const up = await new Promise<boolean>((resolve) => {
      const sock = createConnection({ host: '127.0.0.1', port }, () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (up) return;
    await sleep(50);
  }
  throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
