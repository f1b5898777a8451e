/**
 * The serial console of a qemu machine. QEMU writes everything the guest prints
 * to `console.log` (the chardev's logfile, from the first byte, whether or not
 * a client is connected) and offers the same chardev on `serial.sock` for input.
 *
 * - `consoleTail` / `waitForConsoleLine` read console.log, so output printed
 *   before the call counts as much as output still to come.
 * - `runOnSerial` types a command into the shell on the console and reads its
 *   output back between two markers; the chardev takes one client at a time,
 *   so callers serialize per machine.
 */
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { LifeboatError } from '../../core/errors.js';
import type { GuestCommandResult } from '../driver.js';

const POLL_MS = 100;
/** How much of the console an error message quotes. */
export const ERROR_TAIL_BYTES = 2000;

/** The last `maxBytes` of the file as text ('' when it does not exist yet). */
export async function consoleTail(path: string, maxBytes: number): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, Math.max(0, maxBytes));
    const buf = Buffer.alloc(length);
    if (length > 0) await handle.read(buf, 0, length, size - length);
    return buf.toString('utf8');
  } finally {
    await handle.close();
  }
}

export interface WaitForLineOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** False once the machine can print no more (QEMU exited). */
  readonly running: () => Promise<boolean>;
  /** Names the machine in errors. */
  readonly id: string;
}

/**
 * Scans the console log from its first byte for a line matching `pattern` and
 * resolves with it and Date.now() when it was read. TIMEOUT after timeoutMs or on
 * abort; COMPUTE_FAILED (with the console's tail) when QEMU exits first.
 */
export async function waitForConsoleLine(path: string, pattern: RegExp, options: WaitForLineOptions): Promise<{ line: string; atMs: number }> {
  const deadline = Date.now() + options.timeoutMs;
  let offset = 0;
  let partial = '';
  const test = (line: string): boolean => {
    pattern.lastIndex = 0;
    return pattern.test(line);
  };
  for (;;) {
    // Decide whether QEMU still runs before reading, so output it printed just before exiting is read.
    const running = await options.running();
    const chunk = await readFrom(path, offset);
    offset += chunk.length;
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      if (test(line)) return { line, atMs: Date.now() };
    }
    if (!running) {
      if (partial !== '' && test(partial)) return { line: partial, atMs: Date.now() };
      const tail = await consoleTail(path, ERROR_TAIL_BYTES);
      throw new LifeboatError('COMPUTE_FAILED', `machine ${options.id} stopped before its console showed ${String(pattern)}; console tail:\n${tail}`, {
        details: { id: options.id, consoleTail: tail },
      });
    }
    if (options.signal?.aborted) throw new LifeboatError('TIMEOUT', `waiting for the console of machine ${options.id} was aborted`);
    const left = deadline - Date.now();
    if (left <= 0) {
      const tail = await consoleTail(path, ERROR_TAIL_BYTES);
      throw new LifeboatError('TIMEOUT', `the console of machine ${options.id} did not show ${String(pattern)} within ${options.timeoutMs} ms; console tail:\n${tail}`, {
        details: { id: options.id, consoleTail: tail },
      });
    }
    await sleep(Math.min(POLL_MS, left), undefined, { signal: options.signal }).catch(() => undefined);
  }
}

async function readFrom(path: string, offset: number): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
    throw err;
  }
  try {
    const { size } = await handle.stat();
    if (size <= offset) return Buffer.alloc(0);
    const buf = Buffer.alloc(size - offset);
    const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/**
 * Runs `command` in the shell on the serial console: sends
 * `echo <start>; command; echo <end>=$?` and resolves with what was printed
 * between the two marker lines and the exit status. The markers carry a random
 * nonce, so earlier output and the terminal's echo of the typed line never match.
 */
export async function runOnSerial(socketPath: string, command: string, options: { timeoutMs: number; signal?: AbortSignal; id: string }): Promise<GuestCommandResult> {
  if (/[\n\r]/.test(command)) throw new LifeboatError('VALIDATION', 'a guest command is one line');
  const nonce = randomBytes(6).toString('hex');
  const start = `__LB_START_${nonce}`;
  const end = new RegExp(`^__LB_RC_${nonce}=(\\d+)$`);
  return new Promise<GuestCommandResult>((resolve, reject) => {
    const socket = connect({ path: socketPath });
    let text = '';
    let settled = false;
    const finish = (err: Error | null, result?: GuestCommandResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve(result as GuestCommandResult);
    };
    const timer = setTimeout(
      () => finish(new LifeboatError('TIMEOUT', `the command in machine ${options.id} did not finish within ${options.timeoutMs} ms`, { details: { id: options.id } })),
      options.timeoutMs,
    );
    const onAbort = (): void => finish(new LifeboatError('TIMEOUT', `the command in machine ${options.id} was aborted`, { details: { id: options.id } }));
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`echo ${start}; ${command}; echo __LB_RC_${nonce}=$?\n`));
    socket.on('data', (d: string) => {
      text += d;
      const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
      const first = lines.indexOf(start);
      if (first < 0) return;
      for (let i = first + 1; i < lines.length - 1; i++) {
        const m = end.exec(lines[i] as string);
        if (m) return finish(null, { exitCode: Number(m[1]), output: lines.slice(first + 1, i).map((l) => `${l}\n`).join('') });
      }
    });
    socket.on('error', (err) =>
      finish(new LifeboatError('COMPUTE_FAILED', `cannot reach the serial console of machine ${options.id}: ${err.message}`, { cause: err, details: { id: options.id } })),
    );
    socket.on('close', () => finish(new LifeboatError('COMPUTE_FAILED', `the serial console of machine ${options.id} closed before the command finished`, { details: { id: options.id } })));
  });
}
