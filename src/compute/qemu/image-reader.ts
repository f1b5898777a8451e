/**
 * Reads a disk image file (qcow2, VHD) as a BlockSource: qemu-nbd serves it
 * read-only on a private Unix socket and Lifeboat's NBD client reads it, so
 * QEMU's own format code interprets the image (overlay chains included).
 * close() ends qemu-nbd and removes the socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlockSource } from '../../core/block-source.js';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { NbdClient, nbdBlockSource } from '../../nbd/client.js';
import { BASE_ALLOCATION } from '../../nbd/protocol.js';

export interface ImageFileOptions {
  readonly path: string;
  /** QEMU's name of the format: qcow2, vpc (VHD), raw. */
  readonly format: 'qcow2' | 'vpc' | 'raw';
  /** Where the private socket goes (a directory only Lifeboat writes). */
  readonly socketDir: string;
  /** Export name (also names the socket). */
  readonly name: string;
  /**
   * qcow2 only: the backing to use instead of the image header's, as QEMU
   * blockdev options for `backing` (e.g. an NBD export of the recovery point).
   */
  readonly backing?: Readonly<Record<string, string>>;
  readonly startTimeoutMs?: number;
}

export async function openImageFile(options: ImageFileOptions): Promise<BlockSource> {
  const socketPath = join(options.socketDir, `read-${options.name}-${randomBytes(4).toString('hex')}.sock`);
  const image: Record<string, string> = { driver: options.format, 'file.driver': 'file', 'file.filename': options.path };
  // A VHD's size is its footer's current size; qemu would size images from other writers by their CHS geometry (smaller).
  if (options.format === 'vpc') image['force_size_calc'] = 'current_size';
  for (const [key, value] of Object.entries(options.backing ?? {})) image[`backing.${key}`] = value;
  const args = [
    '--read-only',
    '--shared=4',
    `--socket=${socketPath}`,
    `--export-name=${options.name}`,
    '--image-opts',
    Object.entries(image)
      .map(([k, v]) => `${k}=${v.replaceAll(',', ',,')}`)
      .join(','),
  ];
  const child = spawn('qemu-nbd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exited: string | null = null;
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.on('exit', (code, signal) => (exited = signal ?? `exit ${code}`));
  child.on('error', (err) => (exited = err.message));
  const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
  let client: NbdClient | undefined;
  try {
    for (;;) {
      if (exited !== null) throw new LifeboatError('COMPUTE_FAILED', `qemu-nbd could not serve ${options.path} (${exited}): ${stderr.trim()}`);
      try {
        client = await NbdClient.connect({ target: { socketPath }, exportName: options.name, metaContexts: [BASE_ALLOCATION] });
        break;
      } catch (err) {
        if (!isLifeboatError(err) || Date.now() > deadline) throw err;
        await sleep(50);
      }
    }
  } catch (err) {
    await stop(child, socketPath);
    throw err;
  }
  return nbdBlockSource(client, () => stop(child, socketPath));
}

async function stop(child: ChildProcess, socketPath: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await Promise.race([gone, sleep(5000)]);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await gone;
    }
  }
  await rm(socketPath, { force: true });
}
