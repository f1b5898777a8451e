/**
 * The agent's modes and machine commands (docs/recovery.md, "Fencing", "Shutting down
 * and starting the source"), on the fake clock, fake disk, in-memory process server
 * and fake vault: fenced stops shipping until the vault says replicate again at a new
 * generation; a shutdown or start request runs its command once per id, whatever
 * heartbeats or restarts follow, and its outcome is reported.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAgentFileConfig } from '../../src/agent/config.js';
import type { CommandRunner } from '../../src/agent/freeze.js';
import { isLifeboatError } from '../../src/core/errors.js';
import { Harness } from './harness.js';

function recordingRunner(code: number | null = 0): CommandRunner & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    run: async (command, args) => {
      calls.push([command, ...args]);
      return { code, stderr: code === 0 ? '' : 'it did not work' };
    },
  };
}

const withMachine = (machine: Record<string, unknown>) =>
  parseAgentFileConfig({ disks: [{ name: 'vda', tracker: { kind: 'qemu' } }], machine: { timeoutMs: 5000, ...machine } });

describe('agent modes', () => {
  it('fenced: stops shipping, keeps its generation, and replicates again only when the vault says replicate at a newer one', async () => {
    const h = new Harness();
    try {
      h.start();
      h.fill(0, 8192);
      await h.untilCommitted(1);
      h.vault.config = { ...h.vault.config, mode: 'fenced', generation: 2 };
      await h.clock.until(() => h.agent.report().mode === 'fenced', 'the fenced mode');
      const committed = h.count('cut-committed');
      h.fill(65536, 4096);
      // Ten crash-consistent intervals of fake time: a replicating agent would have shipped the write.
      for (let i = 0; i < 100; i++) await h.clock.advance(100);
      assert.equal(h.count('cut-committed'), committed, 'nothing is shipped while fenced');
      assert.equal(h.agent.status().connected, false, 'no session is open while fenced');
      assert.equal(h.agent.status().disks[0]?.generation, 1, 'a new generation does not unfence by itself');
      assert.equal(h.vault.lastReport?.mode, 'fenced', 'the heartbeat reports the mode');

      h.vault.config = { ...h.vault.config, mode: 'replicate', generation: 3 };
      await h.clock.until(() => h.count('cut-committed') > committed, 'a cut at the new generation');
      assert.equal(h.agent.status().disks[0]?.generation, 3);
      assert.ok(h.stored(3).length > 0, 'segments of generation 3 reached the process server');
      await h.stop();
    } finally {
      h.cleanup();
    }
  });

  it('back from reverse: a tracker that cannot open yet (its machine still off) is tried again until replication resumes', async () => {
    const h = new Harness({ config: { mode: 'reverse' } });
    try {
      let refusals = 2;
      h.start({
        openTracker: async () => {
          if (refusals > 0) {
            refusals--;
            throw new Error('QMP socket not there: the machine is off');
          }
          return h.disk.tracker();
        },
      });
      await h.clock.until(() => h.vault.lastReport?.mode === 'reverse', 'the reverse mode reported');
      assert.equal(refusals, 2, 'no tracker is opened in reverse mode');
      h.fill(0, 4096);
      h.vault.config = { ...h.vault.config, mode: 'replicate', generation: 2 };
      await h.clock.until(() => h.count('cut-committed') >= 1, 'a cut once the tracker opened');
      assert.equal(refusals, 0);
      assert.ok(h.of('disk-error').length >= 2, 'each failed open is reported');
      assert.equal(h.agent.status().disks[0]?.generation, 2);
      await h.stop();
    } finally {
      h.cleanup();
    }
  });

  it('runs a shutdown request once per id and reports it; a restart does not run it again', async () => {
    const h = new Harness();
    try {
      const runner = recordingRunner();
      const config = withMachine({ shutdownCommand: ['systemctl', 'poweroff'] });
      h.start({ runner, config });
      h.vault.config = { ...h.vault.config, shutdownRequest: { id: 'shutdown-1' } };
      await h.clock.until(() => h.vault.lastReport?.shutdown?.id === 'shutdown-1', 'the outcome reported');
      assert.deepEqual(h.vault.lastReport?.shutdown, { id: 'shutdown-1', ok: true, error: null });
      for (let i = 0; i < 30; i++) await h.clock.advance(200);
      assert.deepEqual(runner.calls, [['systemctl', 'poweroff']], 'run once whatever heartbeats follow');
      await h.stop();

      // The machine comes back with the request still in the vault's answer: not run again.
      const again = recordingRunner();
      h.start({ runner: again, config });
      for (let i = 0; i < 30; i++) await h.clock.advance(200);
      assert.deepEqual(again.calls, []);
      assert.deepEqual(h.vault.lastReport?.shutdown, { id: 'shutdown-1', ok: true, error: null });
      await h.stop();
    } finally {
      h.cleanup();
    }
  });

  it('reports a failed command and a missing one, each with its reason', async () => {
    const h = new Harness();
    try {
      const runner = recordingRunner(1);
      h.start({ runner, config: withMachine({ startCommand: ['virsh', 'start', 'web'] }) });
      h.vault.config = { ...h.vault.config, startRequest: { id: 'start-1' }, shutdownRequest: { id: 'shutdown-9' } };
      await h.clock.until(() => h.vault.lastReport?.start?.id === 'start-1' && h.vault.lastReport?.shutdown?.id === 'shutdown-9', 'both outcomes reported');
      const report = h.vault.lastReport;
      assert.equal(report?.start?.ok, false);
      assert.match(report?.start?.error ?? '', /virsh exited 1: it did not work/);
      assert.equal(report?.shutdown?.ok, false);
      assert.match(report?.shutdown?.error ?? '', /no machine\.shutdownCommand/);
      assert.deepEqual(runner.calls, [['virsh', 'start', 'web']]);
      await h.stop();
    } finally {
      h.cleanup();
    }
  });
});

describe('agent.json: machine commands and disk files', () => {
  it('validates the machine commands and defaults a disk file to the tracker path', () => {
    const c = parseAgentFileConfig({
      disks: [
        { name: 'root', tracker: { kind: 'scan', path: '/dev/vda' } },
        { name: 'data', tracker: { kind: 'journal', path: '/srv/data.img', socketPath: '/run/x.sock' }, file: '/srv/data.img' },
        { name: 'vm', tracker: { kind: 'qemu' } },
      ],
      machine: { shutdownCommand: ['systemctl', 'poweroff'] },
    });
    assert.equal(c.disks[0]?.file, '/dev/vda');
    assert.equal(c.disks[1]?.file, '/srv/data.img');
    assert.equal(c.disks[2]?.file, undefined);
    assert.deepEqual(c.machine, { shutdownCommand: ['systemctl', 'poweroff'], startCommand: [], timeoutMs: 120_000 });
    assert.ok(Object.isFrozen(c.machine));
    const bad = (raw: unknown, why: RegExp) =>
      assert.throws(() => parseAgentFileConfig(raw), (e: unknown) => isLifeboatError(e, 'CONFIG_INVALID') && why.test((e as Error).message));
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan', path: '/x' }, file: 'relative.img' }] }, /disks\[0\]\.file must be an absolute path/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan', path: '/x' }, size: 1 }] }, /unknown key disks\[0\]\.size/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan', path: '/x' } }], machine: { shutdownCommand: 'poweroff' } }, /machine\.shutdownCommand must be a list/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan', path: '/x' } }], machine: { timeoutMs: 5 } }, /machine\.timeoutMs/);
    bad({ disks: [{ name: 'a', tracker: { kind: 'scan', path: '/x' } }], machine: { reboot: [] } }, /unknown key machine\.reboot/);
  });
});
