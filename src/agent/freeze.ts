import { spawn } from 'node:child_process';
import { LifeboatError } from '../core/errors.js';
import type { Clock } from './clock.js';
import type { FreezeSpec } from './config.js';

/** Runs one command (no shell). Resolves with its exit code; when `signal` aborts the command is killed and the promise resolves (code null). */
export interface CommandRunner {
  run(command: string, args: readonly string[], signal: AbortSignal): Promise<{ readonly code: number | null; readonly stderr: string }>;
  /**
   * Starts a process outside the agent that runs `fsfreeze -u` on `mountPoints`
   * after `afterMs`, so the filesystems are thawed even if the agent itself is
   * killed while they are frozen. Returns a function that cancels it.
   */
  watchdog?(fsfreeze: string, mountPoints: readonly string[], afterMs: number): () => void;
}

/** The real runner: child_process.spawn, SIGKILL on abort (a hung script must not keep the filesystems frozen). */
export const processRunner: CommandRunner = {
  run: (command, args, signal) =>
    new Promise((resolve) => {
      let stderr = '';
      const child = spawn(command, [...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      const kill = (): void => {
        child.kill('SIGKILL');
      };
      if (signal.aborted) kill();
      signal.addEventListener('abort', kill, { once: true });
      child.stderr?.on('data', (d: Buffer) => {
        if (stderr.length < 4096) stderr += d.toString();
      });
      child.on('error', (err) => {
        signal.removeEventListener('abort', kill);
        resolve({ code: null, stderr: err.message });
      });
      child.on('close', (code) => {
        signal.removeEventListener('abort', kill);
        resolve({ code, stderr });
      });
    }),
  watchdog: (fsfreeze, mountPoints, afterMs) => {
    // sh -c 'sleep S; fsfreeze -u "$1"; fsfreeze -u "$2" ...' in its own process group: it outlives a killed agent.
    const script = `sleep ${Math.max(1, Math.ceil(afterMs / 1000))}; for mp in "$@"; do ${JSON.stringify(fsfreeze)} -u "$mp" 2>/dev/null; done`;
    const child = spawn('sh', ['-c', script, 'lifeboat-thaw-watchdog', ...mountPoints], { detached: true, stdio: 'ignore' });
    child.on('error', () => undefined);
    child.unref();
    return () => {
      try {
        if (child.pid !== undefined && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    };
  },
};

export interface FrozenResult<T> {
  readonly value: T;
  /** True only if every mount point was frozen from before `fn` started until after it returned. */
  readonly appConsistent: boolean;
  /** FREEZE_FAILED when the cut could not be taken frozen (it was then taken unfrozen). */
  readonly error?: LifeboatError;
}

/**
 * App-consistent cuts (docs/replication.md, "Agent: cuts"): pre-scripts, then
 * `fsfreeze -f` of every mount point, the cut, `fsfreeze -u`, post-scripts. A
 * timer started before the first pre-script thaws everything after `timeoutMs`
 * whatever happens (a hung script is killed), so a machine is never left frozen.
 * When anything fails the filesystems are thawed and `fn` runs unfrozen: the
 * caller gets a crash-consistent cut and the error, never a cut falsely marked
 * app-consistent.
 */
export class Freezer {
  constructor(
    private readonly spec: FreezeSpec,
    private readonly clock: Clock,
    private readonly runner: CommandRunner = processRunner,
    private readonly fsfreeze = 'fsfreeze',
  ) {}

  async frozen<T>(fn: () => Promise<T>): Promise<FrozenResult<T>> {
    const deadline = new AbortController(); // aborts at the timeout: kills scripts, thaws
    const finished = new AbortController(); // stops the timer
    const frozenMounts: string[] = [];
    let thawing: Promise<void> | undefined;
    const thaw = (): Promise<void> =>
      (thawing ??= (async () => {
        // Thaw commands get their own signal: they must run even after the deadline.
        for (const mp of frozenMounts.splice(0).reverse()) {
          const r = await this.runner.run(this.fsfreeze, ['-u', mp], new AbortController().signal);
          if (r.code !== 0) failures.push(`fsfreeze -u ${mp} exited ${r.code}: ${r.stderr.trim()}`);
        }
      })());
    const failures: string[] = [];
    let timedOut = false;
    const timer = this.clock.sleep(this.spec.timeoutMs, finished.signal).then(async () => {
      if (finished.signal.aborted) return;
      timedOut = true;
      deadline.abort();
      await thaw();
    });

    // A second line of defence outside this process: thaws a little after the timer would, if the agent dies while frozen.
    const cancelWatchdog = this.spec.mountPoints.length > 0 ? this.runner.watchdog?.(this.fsfreeze, this.spec.mountPoints, this.spec.timeoutMs + 1000) : undefined;
    let ready = false;
    let value: T | undefined;
    let ran = false;
    let appConsistent = false;
    try {
      for (const script of this.spec.preScripts) {
        const r = await this.runner.run(script, [], deadline.signal);
        if (timedOut) throw new Error(`pre-script ${script} did not finish within ${this.spec.timeoutMs} ms and was killed`);
        if (r.code !== 0) throw new Error(`pre-script ${script} exited ${r.code}: ${r.stderr.trim()}`);
      }
      for (const mp of this.spec.mountPoints) {
        frozenMounts.push(mp); // thawed even if -f only half worked
        const r = await this.runner.run(this.fsfreeze, ['-f', mp], deadline.signal);
        if (timedOut) throw new Error(`fsfreeze -f ${mp} did not finish within ${this.spec.timeoutMs} ms`);
        if (r.code !== 0) throw new Error(`fsfreeze -f ${mp} exited ${r.code}: ${r.stderr.trim()}`);
      }
      ready = true;
      ran = true;
      value = await fn();
      // The timer may have thawed while fn ran: then the cut was not taken frozen throughout.
      appConsistent = !timedOut;
      if (timedOut) failures.push(`the cut took longer than the freeze timeout (${this.spec.timeoutMs} ms); filesystems were thawed by the timer`);
    } catch (err) {
      if (ran) throw err; // fn itself failed: not a freeze problem
      failures.push((err as Error).message);
    } finally {
      await thaw();
      cancelWatchdog?.();
      finished.abort();
      await timer;
      if (this.spec.preScripts.length > 0 || this.spec.postScripts.length > 0) {
        for (const script of this.spec.postScripts) {
          const r = await this.runner.run(script, [], AbortSignal.timeout(this.spec.timeoutMs));
          if (r.code !== 0) failures.push(`post-script ${script} exited ${r.code}: ${r.stderr.trim()}`);
        }
      }
    }
    if (!ready) value = await fn(); // freezing failed: a crash-consistent cut instead
    const error =
      failures.length === 0
        ? undefined
        : new LifeboatError('FREEZE_FAILED', failures.join('; '), { details: { mountPoints: this.spec.mountPoints, timedOut } });
    return { value: value as T, appConsistent: appConsistent && failures.length === 0, ...(error ? { error } : {}) };
  }
}
