import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { until as waitFor } from '../../src/cli/quickstart/wait.js';
import { repoRoot } from './env.js';

/** The quickstart's own poll (TIMEOUT naming what was awaited), for the tests that drive it. */
export { waitFor };

/** `lifeboat quickstart` run from source as its own process (the CLI test and the portal's end-to-end test). */
const CLI = join(repoRoot, 'test', 'agent', 'lifeboat-cli.ts');

export interface QuickstartReady {
  event: 'ready';
  url: string;
  user: string;
  password: string | null;
  dir: string;
  items: { machine: string; id: string; state: string }[];
  computeDriver: string;
}

/** One quickstart process: its output so far and its exit. */
export class QuickstartRun {
  stdout = '';
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly child: ChildProcess;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, ['--import', 'tsx', CLI, 'quickstart', ...args], { cwd: repoRoot, env: { ...process.env, PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve((this.exit = { code, signal }))));
  }

  /** The ready line; fails as soon as the process exits without one. */
  ready(timeoutMs = 180_000): Promise<QuickstartReady> {
    return waitFor('the ready line', timeoutMs, async () => {
      if (this.exit) throw new Error(`quickstart exited ${JSON.stringify(this.exit)} before it was ready\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
      const line = this.stdout.split('\n').find((l) => l.startsWith('{'));
      return line === undefined ? undefined : (JSON.parse(line) as QuickstartReady);
    });
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.exit) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 60_000);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
