/**
 * Boots a disk in QEMU (TCG; KVM does not work here) and waits for the guest's
 * marker line on the serial console. Used by end-to-end tests to prove that a
 * restored, served or failed-over disk actually boots.
 *
 * The disk is attached as an NVMe device with bootindex=0, so SeaBIOS boots its
 * MBR; images from buildGuestImage() print their marker and power off.
 *
 * Contracts:
 * - Resolves only when the marker line has appeared AND QEMU exited with status 0
 *   (the guest powered off; -no-reboot turns a panic or reset into an exit too).
 * - Rejects with the console log when the marker is missing at exit, or on timeout.
 * - QEMU is always killed (SIGKILL) before the promise settles.
 * - With overlay (the default), writes go to a local qcow2 overlay whose backing is
 *   the file or NBD export, opened read-only: the source is never written.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { repoRoot, requireTool } from './env.js';
import { run } from './guest.js';

export type BootDrive =
  | { file: string; format: 'raw' | 'qcow2' }
  /** e.g. nbd://127.0.0.1:10809/name or nbd+unix:///name?socket=/path */
  | { nbdUri: string };

export interface BootOptions {
  drive: BootDrive;
  /**
   * Boot through a fresh qcow2 overlay backed by the drive (default true), so
   * the source is never written. false attaches the drive itself read-write.
   */
  overlay?: boolean;
  /** Where to create the overlay; kept after boot if given (to inspect guest writes), else a temp file that is removed. */
  overlayPath?: string;
  /** Give up (and kill QEMU) after this long; a TCG boot takes ~5 s, allow 120 s. */
  timeoutMs: number;
  /** Text the guest prints when it is up (GuestImage.marker). */
  marker: string;
  /** vCPUs (default 1). */
  smp?: number;
  /** Guest RAM in MiB (default 256). */
  memoryMiB?: number;
}

export interface BootResult {
  /** Everything the guest wrote to its serial console. */
  consoleLog: string;
  /** The first console line containing the marker, without line ending. */
  markerLine: string;
  /** From QEMU start to QEMU exit. */
  elapsedMs: number;
  /** From QEMU start to the marker line. */
  markerMs: number;
  /** The overlay used, if overlayPath was given (otherwise it has been removed). */
  overlayPath?: string;
}

export class BootError extends Error {
  constructor(
    message: string,
    readonly consoleLog: string,
    readonly elapsedMs: number,
  ) {
    super(`${message}\n--- guest console (${consoleLog.length} chars) ---\n${consoleLog}\n--- end of console ---`);
    this.name = 'BootError';
  }
}

export async function bootAndWaitForMarker(opts: BootOptions): Promise<BootResult> {
  const qemu = requireTool('qemu-system-x86_64', 'qemu-system-x86');
  const overlay = opts.overlay ?? true;
  let tempDir: string | undefined;
  let overlayPath: string | undefined;
  try {
    let driveArg: string;
    if (overlay) {
      const qemuImg = requireTool('qemu-img', 'qemu-utils');
      if (opts.overlayPath) {
        overlayPath = resolve(opts.overlayPath);
      } else {
        tempDir = await mkdtemp(join(repoRoot, '.test-tmp', 'boot-'));
        overlayPath = join(tempDir, 'overlay.qcow2');
      }
      const [backing, backingFormat] =
        'nbdUri' in opts.drive ? [opts.drive.nbdUri, 'raw'] : [resolve(opts.drive.file), opts.drive.format];
      // Opens the backing once (checks it is reachable); QEMU opens backings read-only.
      await run(qemuImg, ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', backingFormat, overlayPath]);
      driveArg = `file=${qemuOptValue(overlayPath)},format=qcow2`;
    } else if ('nbdUri' in opts.drive) {
      driveArg = `file=${qemuOptValue(opts.drive.nbdUri)},format=raw`;
    } else {
      driveArg = `file=${qemuOptValue(resolve(opts.drive.file))},format=${opts.drive.format}`;
    }

    const args = [
      '-accel', 'tcg',
      '-m', String(opts.memoryMiB ?? 256),
      '-smp', String(opts.smp ?? 1),
      '-nographic', '-nodefaults', '-no-user-config',
      '-serial', 'stdio',
      '-no-reboot',
      '-drive', `${driveArg},if=none,id=disk0`,
      '-device', 'nvme,drive=disk0,serial=lifeboat0,bootindex=0',
    ];
    const result = await runUntilMarker(qemu, args, opts.marker, opts.timeoutMs);
    return opts.overlayPath ? { ...result, overlayPath } : result;
  } finally {
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
  }
}

/** QEMU -drive values escape commas by doubling them. */
function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

function runUntilMarker(qemu: string, args: string[], marker: string, timeoutMs: number): Promise<Omit<BootResult, 'overlayPath'>> {
  return new Promise((resolvePromise, reject) => {
    const started = Date.now();
    // stdin is a pipe we never write: -serial stdio must not read the test runner's stdin.
    const child = spawn(qemu, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let consoleLog = '';
    let stderr = '';
    let markerLine: string | undefined;
    let markerMs = 0;
    let settled = false;

    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) {
        // Settle only once QEMU is really gone, so callers may delete its files.
        child.once('exit', outcome);
        child.kill('SIGKILL');
      } else {
        outcome();
      }
    };
    const timer = setTimeout(() => {
      finish(() =>
        reject(
          new BootError(
            `guest did not ${markerLine === undefined ? `print "${marker}"` : 'power off after the marker'} within ${timeoutMs} ms (QEMU killed)${stderr ? `; QEMU stderr: ${stderr.trim()}` : ''}`,
            consoleLog,
            Date.now() - started,
          ),
        ),
      );
    }, timeoutMs);

    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      consoleLog += d;
      if (markerLine === undefined) {
        const line = consoleLog.split(/\r?\n/).find((l) => l.includes(marker));
        // Only a complete line counts: the payload after the marker may still be arriving.
        if (line !== undefined && /\r?\n/.test(consoleLog.slice(consoleLog.indexOf(line) + line.length))) {
          markerLine = line.replace(/\r$/, '');
          markerMs = Date.now() - started;
        }
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => finish(() => reject(new BootError(`cannot run ${qemu}: ${err.message}`, consoleLog, Date.now() - started))));
    child.on('close', (code, signal) => {
      const elapsedMs = Date.now() - started;
      if (markerLine !== undefined && code === 0) {
        finish(() => resolvePromise({ consoleLog, markerLine: markerLine as string, elapsedMs, markerMs }));
      } else {
        const why = markerLine === undefined ? `without printing "${marker}"` : 'with an error after the marker';
        finish(() =>
          reject(
            new BootError(
              `QEMU exited (${signal ?? `status ${code}`}) ${why}${stderr ? `; QEMU stderr: ${stderr.trim()}` : ''}`,
              consoleLog,
              elapsedMs,
            ),
          ),
        );
      }
    });
    child.stdin.on('error', () => undefined);
  });
}
