/**
 * Small process helpers for the qemu driver: run a QEMU tool to completion,
 * find binaries on PATH, check and end a detached QEMU by its pid.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LifeboatError } from '../../core/errors.js';

/** The binaries the driver needs, with the Debian package that ships each. */
export const QEMU_BINARIES = [
  { name: 'qemu-system-x86_64', debianPackage: 'qemu-system-x86' },
  { name: 'qemu-img', debianPackage: 'qemu-utils' },
  { name: 'qemu-nbd', debianPackage: 'qemu-utils' },
] as const;

/** The binary's full path on PATH, or undefined. */
export function findOnPath(name: string, path = process.env['PATH'] ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** Why the qemu driver cannot run here (the missing binaries and their packages), or null. */
export function missingQemu(): string | null {
  const missing = QEMU_BINARIES.filter((b) => findOnPath(b.name) === undefined);
  if (missing.length === 0) return null;
  const packages = [...new Set(missing.map((b) => b.debianPackage))];
  return `${missing.map((b) => b.name).join(', ')} not found on PATH: apt-get install ${packages.join(' ')}`;
}

/** Runs a tool to completion; COMPUTE_FAILED with its stderr when it fails. */
export function runTool(cmd: string, args: readonly string[], options: { timeoutMs?: number } = {}): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, [...args], { timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        reject(
          new LifeboatError('COMPUTE_FAILED', `${cmd} failed: ${(stderr || err.message).trim()}`, {
            cause: err,
            details: { command: cmd, args: [...args] },
          }),
        );
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The pid in `pidFile` if that process is alive and is QEMU (its cmdline names
 * the pidfile, so a recycled pid is never taken for the machine); else undefined.
 */
export async function livePid(pidFile: string): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(pidFile, 'utf8'), 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return undefined;
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmdline.includes(pidFile)) return undefined;
  } catch {
    return undefined; // gone between the checks
  }
  return pid;
}

/** Resolves true once `pid` has exited, false after `timeoutMs`. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!processAlive(pid) || isZombie(pid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

/** A zombie has exited; its parent (init, for a daemonized QEMU) has not reaped it yet. */
function isZombie(pid: number): boolean {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // Field 3 is the state; field 2, the command, is in parentheses and may hold spaces.
  const close = text.lastIndexOf(')');
  return text.slice(close + 2, close + 3) === 'Z';
}
