import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { LifeboatError } from '../../core/errors.js';

/** A script is named by a plain file name in the scripts directory: no path, no shell, no code in the API. */
export const SCRIPT_NAME = /^[A-Za-z0-9._-]+$/;
export const SCRIPTS_DIR = 'scripts';
/** How long a plan's script may run; default 10 minutes. */
export const DEFAULT_SCRIPT_TIMEOUT_MS = 10 * 60 * 1000;
/** How much of a failed script's stdout and stderr the step's error keeps (each). */
const TAIL_CHARS = 2000;
/** Output beyond this fails the script (execFile's limit). */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export function isScriptName(name: string): boolean {
  return SCRIPT_NAME.test(name) && name !== '.' && name !== '..';
}

/**
 * The real path of an executable script `name` directly in `dir`. Refuses a name
 * that is not a plain file name, a file that is missing or not executable, and a
 * symbolic link that leads out of the directory, and a file everyone may write
 * (VALIDATION, NOT_FOUND).
 */
export async function resolveScript(dir: string, name: string): Promise<string> {
  if (!isScriptName(name)) throw new LifeboatError('VALIDATION', `script name ${JSON.stringify(name)} must be a plain file name ([A-Za-z0-9._-]+)`, { details: { script: name } });
  let realDir: string;
  let real: string;
  try {
    realDir = await realpath(dir);
    real = await realpath(join(realDir, name));
  } catch (err) {
    throw new LifeboatError('NOT_FOUND', `script ${name} is not in the vault's scripts directory`, { cause: err, details: { script: name } });
  }
  if (!real.startsWith(realDir + sep) || real.slice(realDir.length + 1).includes(sep)) {
    throw new LifeboatError('VALIDATION', `script ${name} leads out of the vault's scripts directory`, { details: { script: name } });
  }
  const info = await stat(real);
  const executable = await access(real, constants.X_OK).then(
    () => true,
    () => false,
  );
  if (!info.isFile() || !executable) throw new LifeboatError('VALIDATION', `script ${name} is not an executable file`, { details: { script: name } });
  // Anyone could change what the vault runs as itself.
  if (info.mode & 0o002) throw new LifeboatError('VALIDATION', `script ${name} is writable by everyone; chmod o-w it`, { details: { script: name } });
  return real;
}

export interface ScriptRun {
  readonly dir: string;
  readonly name: string;
  /** Added to a minimal environment (PATH, LANG): the vault's own environment is not passed on. */
  readonly env: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

const tail = (text: string): string => (text.length > TAIL_CHARS ? `…${text.slice(-TAIL_CHARS)}` : text).trim();

/** Runs one script without a shell, in the scripts directory; a non-zero exit, a time-out or a signal throws with the output's tail. */
export async function runScript(run: ScriptRun): Promise<void> {
  const file = await resolveScript(run.dir, run.name);
  const env = { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', ...run.env };
  await new Promise<void>((resolve, reject) => {
    execFile(
      file,
      [],
      { cwd: run.dir, env, timeout: run.timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, signal: run.signal, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve();
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: NodeJS.Signals | null };
        const output = [stdout && `stdout: ${tail(stdout)}`, stderr && `stderr: ${tail(stderr)}`].filter(Boolean).join('; ');
        const why = run.signal.aborted
          ? 'was stopped: the vault is stopping'
          : e.killed && e.signal
            ? `timed out after ${run.timeoutMs >= 1000 ? `${Math.round(run.timeoutMs / 1000)} s` : `${run.timeoutMs} ms`}`
            : typeof e.code === 'number'
              ? `exited with code ${e.code}`
              : e.signal
                ? `was killed by ${e.signal}`
                : e.message;
        reject(new LifeboatError(e.killed && !run.signal.aborted ? 'TIMEOUT' : 'JOB_FAILED', `script ${run.name} ${why}${output ? `; ${output}` : ''}`, { details: { script: run.name } }));
      },
    );
  });
}
