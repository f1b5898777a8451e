import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { systemClock } from '../../src/agent/clock.js';
import { Freezer, processRunner, type CommandRunner } from '../../src/agent/freeze.js';
import { requireTool } from '../helpers/env.js';
import { tempDir } from './fakes.js';

const spec = (over: Partial<ConstructorParameters<typeof Freezer>[0]> = {}) => ({ mountPoints: ['/a', '/b'], preScripts: [], postScripts: [], timeoutMs: 300, ...over });

/** Records calls; a command listed in `hang` runs until killed (its signal aborts). */
function runner(hang: string[] = []): CommandRunner & { calls: string[]; killed: string[] } {
  const calls: string[] = [];
  const killed: string[] = [];
  return {
    calls,
    killed,
    run: (command, args, signal) => {
      const line = [command, ...args].join(' ');
      calls.push(line);
      if (!hang.includes(line)) return Promise.resolve({ code: 0, stderr: '' });
      return new Promise((resolve) => {
        signal.addEventListener('abort', () => {
          killed.push(line);
          resolve({ code: null, stderr: '' });
        });
      });
    },
  };
}

/** A fresh ext4 on a loop device, mounted for the test and unmounted after (thawed first if a test left it frozen). */
function loopExt4(t: { after: (fn: () => void) => void }): string {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (losetup, mount, fsfreeze): run the suite as root in the CI container');
  requireTool('fsfreeze', 'util-linux');
  requireTool('mkfs.ext4', 'e2fsprogs');
  const dir = tempDir('freeze');
  const image = join(dir.path, 'fs.img');
  const mnt = join(dir.path, 'mnt');
  mkdirSync(mnt);
  execFileSync('truncate', ['-s', '64M', image]);
  execFileSync('mkfs.ext4', ['-q', '-F', image]);
  execFileSync('mount', ['-o', 'loop', image, mnt]);
  t.after(() => {
    try {
      execFileSync('fsfreeze', ['-u', mnt], { stdio: 'ignore' });
    } catch {
      // not frozen: as expected
    }
    execFileSync('umount', [mnt]);
    dir.cleanup();
  });
  return mnt;
}

describe('freezer', () => {
  it('runs pre-scripts, freezes every mount point, cuts, thaws in reverse, runs post-scripts', async () => {
    const r = runner();
    const f = new Freezer(spec({ preScripts: ['/pre'], postScripts: ['/post'], timeoutMs: 5000 }), systemClock, r);
    const result = await f.frozen(async () => {
      r.calls.push('CUT');
      return 42;
    });
    assert.deepEqual(result, { value: 42, appConsistent: true });
    assert.deepEqual(r.calls, ['/pre', 'fsfreeze -f /a', 'fsfreeze -f /b', 'CUT', 'fsfreeze -u /b', 'fsfreeze -u /a', '/post']);
  });

  it('a hung pre-script is killed at the timeout; nothing is frozen and the cut is taken as a crash cut with FREEZE_FAILED', async () => {
    const r = runner(['/pre']);
    const f = new Freezer(spec({ preScripts: ['/pre'], postScripts: ['/post'] }), systemClock, r);
    const result = await f.frozen(async () => {
      r.calls.push('CUT');
      return 'cut';
    });
    assert.equal(result.value, 'cut');
    assert.equal(result.appConsistent, false);
    assert.equal(result.error?.code, 'FREEZE_FAILED');
    assert.match(result.error?.message ?? '', /killed/);
    assert.deepEqual(r.killed, ['/pre']);
    assert.deepEqual(r.calls, ['/pre', '/post', 'CUT']);
  });

  it('a cut that outlasts the timeout is thawed by the timer while it runs and is not app-consistent', async () => {
    const r = runner();
    const f = new Freezer(spec({ timeoutMs: 200 }), systemClock, r);
    let thawedBeforeCutEnded = false;
    const result = await f.frozen(async () => {
      await new Promise((res) => setTimeout(res, 600));
      thawedBeforeCutEnded = r.calls.includes('fsfreeze -u /a') && r.calls.includes('fsfreeze -u /b');
      return 'slow';
    });
    assert.ok(thawedBeforeCutEnded, 'the timer thawed while the cut was still running');
    assert.equal(result.appConsistent, false);
    assert.equal(result.error?.code, 'FREEZE_FAILED');
    assert.equal(r.calls.filter((c) => c.startsWith('fsfreeze -u')).length, 2, 'each mount point thawed once');
  });

  it('a mount point that will not freeze: those frozen already are thawed, the cut is a crash cut', async () => {
    const calls: string[] = [];
    const r: CommandRunner = {
      run: async (command, args) => {
        calls.push([command, ...args].join(' '));
        return { code: args.join(' ') === '-f /b' ? 1 : 0, stderr: 'fsfreeze: /b: not a mount point' };
      },
    };
    const result = await new Freezer(spec({ timeoutMs: 5000 }), systemClock, r).frozen(async () => 'x');
    assert.equal(result.appConsistent, false);
    assert.match(result.error?.message ?? '', /not a mount point/);
    assert.deepEqual(calls, ['fsfreeze -f /a', 'fsfreeze -f /b', 'fsfreeze -u /b', 'fsfreeze -u /a']);
  });

  it('real fsfreeze on a loop-mounted ext4: a write blocks while frozen, and the timer thaws it', async (t) => {
    const mnt = loopExt4(t);
    writeFileSync(join(mnt, 'before'), 'x');
    const f = new Freezer({ mountPoints: [mnt], preScripts: [], postScripts: [], timeoutMs: 1500 }, systemClock, processRunner);
    let writerDoneWhileFrozen = true;
    let writerExited = false;
    const result = await f.frozen(async () => {
      // A writer started now must block until the filesystem is thawed.
      const writer = spawn('sh', ['-c', `echo frozen > ${join(mnt, 'during')} && sync`]);
      const exited = new Promise<void>((res) => writer.on('exit', () => res()));
      void exited.then(() => (writerExited = true));
      await new Promise((res) => setTimeout(res, 500));
      writerDoneWhileFrozen = writerExited;
      await exited; // unblocks only when the timer thaws (the "cut" hangs past the timeout)
      return 'cut';
    });
    assert.equal(writerDoneWhileFrozen, false, 'the write was blocked while frozen');
    assert.equal(writerExited, true);
    assert.equal(result.appConsistent, false, 'thawed by the timer: not app-consistent');
    assert.equal(result.error?.code, 'FREEZE_FAILED');
    execFileSync('sh', ['-c', `echo after > ${join(mnt, 'after')}`], { timeout: 5000 }); // thawed: writes go through
  });

  it('an agent killed (SIGKILL) while frozen: the watchdog outside it thaws the filesystem', async (t) => {
    const mnt = loopExt4(t);
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'freeze-child.ts'), mnt, '1000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('frozen') && res());
      child.on('exit', (code) => rej(new Error(`the freezing child exited (${code}) before freezing`)));
    });
    child.kill('SIGKILL');
    const started = Date.now();
    // Blocks while frozen; the watchdog (timeout + 1 s, rounded up to whole seconds) thaws it.
    execFileSync('sh', ['-c', `echo after > ${join(mnt, 'after-kill')}`], { timeout: 15_000 });
    const waitedMs = Date.now() - started;
    assert.ok(waitedMs > 500, `the write went through after ${waitedMs} ms: the filesystem was not frozen`);
  });
});
