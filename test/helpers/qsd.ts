/**
 * Starts qemu-storage-daemon for tests: one disk node `disk0` over an image
 * (qcow2 or raw), a QMP socket, and optionally an NBD server on a Unix socket
 * with a writable export `rw` through which tests write as a guest would.
 *
 * Contracts:
 * - Paths are absolute (QEMU resolves relative paths against its own cwd).
 * - The daemon is our child, not daemonized, so kill() is a real SIGKILL and
 *   stop() a clean `quit` (persistent bitmaps are written to the qcow2).
 * - A missing tool fails with the Debian package to install, never a skip.
 * - start resolves once QMP accepts connections; if the daemon exits first,
 *   it rejects with the daemon's stderr.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { requireTool } from './env.js';

const execFileAsync = promisify(execFile);

export interface QsdOptions {
  /** Directory for the image and sockets (made absolute). */
  readonly dir: string;
  readonly format: 'qcow2' | 'raw';
  /** Size of the image created when it does not exist yet. */
  readonly sizeBytes: number;
  /** Image file name inside dir (default disk.<format>). An existing image is reused. */
  readonly imageName?: string;
  /** Start an NBD server with a writable export `rw` (default true). */
  readonly nbd?: boolean;
}

export interface Qsd {
  /** The monitor for the code under test (QEMU serves one client per monitor). */
  readonly qmpSocket: string;
  /** A second monitor for the test itself. */
  readonly testQmpSocket: string;
  readonly nbdSocket: string;
  readonly imagePath: string;
  readonly format: 'qcow2' | 'raw';
  readonly node: string;
  readonly pid: number;
  /** nbd+unix URI of the writable export (when nbd is on). */
  readonly writeUri: string;
  /** Runs qemu-io -f raw with the given -c commands against the writable export; rejects on failure. */
  io(commands: readonly string[]): Promise<string>;
  /** Clean stop: QMP quit (bitmaps are stored), waits for exit. */
  stop(): Promise<void>;
  /** SIGKILL, waits for exit. */
  kill(): Promise<void>;
}

export function qemuTools(): { qsd: string; qemuImg: string; qemuIo: string; qemuNbd: string } {
  return {
    qsd: requireTool('qemu-storage-daemon', 'qemu-system-common (pulled in by qemu-system-x86; scripts/install-test-deps.sh)'),
    qemuImg: requireTool('qemu-img', 'qemu-utils (scripts/install-test-deps.sh)'),
    qemuIo: requireTool('qemu-io', 'qemu-utils (scripts/install-test-deps.sh)'),
    qemuNbd: requireTool('qemu-nbd', 'qemu-utils (scripts/install-test-deps.sh)'),
  };
}

export async function startQsd(options: QsdOptions): Promise<Qsd> {
  const tools = qemuTools();
  const dir = resolve(options.dir);
  const imagePath = join(dir, options.imageName ?? `disk.${options.format}`);
  const qmpSocket = join(dir, 'qmp.sock');
  const testQmpSocket = join(dir, 'qmp-test.sock');
  const nbdSocket = join(dir, 'nbd.sock');
  const nbd = options.nbd ?? true;
  if (!existsSync(imagePath)) {
    await execFileAsync(tools.qemuImg, ['create', '-q', '-f', options.format, imagePath, String(options.sizeBytes)]);
  }
  // A killed daemon leaves its sockets behind.
  await rm(qmpSocket, { force: true });
  await rm(testQmpSocket, { force: true });
  await rm(nbdSocket, { force: true });

  const args = [
    '--blockdev', `driver=file,node-name=file0,filename=${imagePath},cache.direct=off`,
    '--blockdev', `driver=${options.format},node-name=disk0,file=file0`,
    '--chardev', `socket,path=${qmpSocket},server=on,wait=off,id=qmp0`,
    '--monitor', 'chardev=qmp0',
    '--chardev', `socket,path=${testQmpSocket},server=on,wait=off,id=qmp1`,
    '--monitor', 'chardev=qmp1',
  ];
  if (nbd) {
    args.push('--nbd-server', `addr.type=unix,addr.path=${nbdSocket}`);
    args.push('--export', 'type=nbd,id=rw,node-name=disk0,name=rw,writable=on');
  }
  const child = spawn(tools.qsd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout?.resume();
  // A failed test must not hang the run on a daemon it never stopped: the daemon does not
  // keep the test process alive, and dies with it.
  child.unref();
  (child.stdout as unknown as { unref?: () => void } | null)?.unref?.();
  (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();
  running.add(child);
  const exited = new Promise<void>((r) =>
    child.once('exit', () => {
      running.delete(child);
      r();
    }),
  );
  await waitForSocket(qmpSocket, child, () => stderr);
  // The NBD server comes up after the monitors.
  if (nbd) await waitForSocket(nbdSocket, child, () => stderr);

  const writeUri = `nbd+unix:///rw?socket=${nbdSocket}`;
  return {
    qmpSocket,
    testQmpSocket,
    nbdSocket,
    imagePath,
    format: options.format,
    node: 'disk0',
    pid: child.pid as number,
    writeUri,
    io: async (commands) => {
      const { stdout } = await execFileAsync(tools.qemuIo, ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), writeUri]);
      if (/fail|error/i.test(stdout)) throw new Error(`qemu-io reported a failure: ${stdout}`);
      return stdout;
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.ref(); // keeps the test alive until the daemon is gone
      await quit(testQmpSocket).catch(() => child.kill('SIGTERM'));
      await exited;
    },
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.ref();
      child.kill('SIGKILL');
      await exited;
    },
  };
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

async function waitForSocket(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`qemu-storage-daemon exited (${child.signalCode ?? child.exitCode}) before QMP was up: ${stderr()}`);
    }
    if (existsSync(path)) {
      const ok = await new Promise<boolean>((r) => {
        const s = connect({ path });
        s.once('connect', () => {
          s.destroy();
          r(true);
        });
        s.once('error', () => r(false));
      });
      if (ok) return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  throw new Error(`qemu-storage-daemon did not open ${path} within 15 s: ${stderr()}`);
}

/** Sends qmp_capabilities and quit on a fresh connection. */
function quit(qmpSocket: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const s = connect({ path: qmpSocket });
    let buffer = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buffer += d;
      if (buffer.includes('"QMP"') && !buffer.includes('sent')) {
        buffer += 'sent';
        s.write('{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n');
      }
    });
    s.once('close', () => resolvePromise());
    s.once('error', reject);
  });
}
