import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AgentConfig } from '../../src/agent/config.js';
import { StateDir } from '../../src/agent/state.js';
import { DISK, ITEM, MACHINE, harness, storedSegments, tempDir, waitFor } from '../process-server/harness.js';
import { replay } from './fakes.js';

const CREDENTIAL = 'lbagent_CLI_credential_not_in_output';
const MiB = 2 ** 20;

describe('lifeboat agent run (a child process)', () => {
  it('replicates to a real process server, heartbeats the vault over HTTP, prints --json lines, and exits 0 on SIGTERM', async (t) => {
    const ps = await harness();
    const dir = await tempDir('agent-cli');
    const heartbeats: Record<string, unknown>[] = [];
    const config: AgentConfig = {
      generation: 1,
      paused: false,
      throttleBytesPerSec: 0,
      crashConsistentFrequencySeconds: 1,
      appConsistentFrequencyMinutes: 0,
      disks: [{ name: 'sda', storeDisk: DISK }],
      processServer: { host: '127.0.0.1', port: ps.server.port, serverName: 'localhost' },
    };
    const vault = createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        if (req.url !== '/api/v1/agents/self/heartbeat' || req.headers.authorization !== `Bearer ${CREDENTIAL}`) {
          res.writeHead(401, { 'content-type': 'application/problem+json' });
          return res.end(JSON.stringify({ code: 'UNAUTHENTICATED', detail: 'no' }));
        }
        heartbeats.push(JSON.parse(text) as Record<string, unknown>);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(config));
      });
    });
    await new Promise<void>((r) => vault.listen(0, '127.0.0.1', () => r()));
    t.after(async () => {
      await new Promise((r) => vault.close(r));
      await ps.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    const image = join(dir, 'sda.img');
    writeFileSync(image, Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(2 * MiB)]));
    const stateDir = join(dir, 'state');
    // Enrolled already (the enrollment path has its own test): the test CA's certificate for this machine.
    new StateDir(stateDir).saveIdentity(
      {
        machineId: MACHINE,
        itemId: ITEM,
        vaultUrl: `http://127.0.0.1:${(vault.address() as AddressInfo).port}`,
        enrolledAt: new Date().toISOString(),
        keyPem: ps.pki.agent.keyPem,
        certificatePem: ps.pki.agent.certPem,
        caPem: ps.pki.ca.caPem,
        credential: CREDENTIAL,
      },
      config,
    );
    writeFileSync(join(stateDir, 'agent.json'), JSON.stringify({ disks: [{ name: 'sda', tracker: { kind: 'scan', path: image } }] }));

    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'lifeboat-cli.ts'), 'agent', 'run', '--state-dir', stateDir, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const lines = (): Record<string, unknown>[] =>
      stdout
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    try {
      await waitFor('two committed cuts', () => lines().filter((l) => l.event === 'cut-committed').length >= 2, 60_000);
      await waitFor('a heartbeat reporting continuous replication', () => heartbeats.some((h) => (h.disks as { state: string }[])[0]?.state === 'continuous'), 20_000);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
    const events = lines().map((l) => l.event);
    assert.equal(events[0], 'tracker-opened');
    assert.equal(events.at(-1), 'stopped');
    assert.ok(!stdout.includes(CREDENTIAL) && !stderr.includes(CREDENTIAL), 'the credential is never printed');
    const hb = heartbeats.at(-1) as { version: string; disks: { name: string; ackedSequence: number }[] };
    assert.equal(hb.version, '0.1.0');
    assert.equal(hb.disks[0]?.name, 'sda');
    await ps.server.drained();
    const segs = await storedSegments(ps.repo, DISK);
    const { bytes } = replay(
      segs.map((s) => ({ ...s, disk: DISK, capturedAtMs: s.createdAtMs, flags: s.flags ?? 0 })),
      4 * MiB,
    );
    assert.ok(bytes.equals(readFileSync(image)));
    const state = new StateDir(stateDir).diskState('sda');
    assert.equal(state?.inFlight, null, 'stopped cleanly: no cut in flight');
    assert.equal(state?.nextSequence, segs.length + 1);
  });
});

describe('lifeboat agent run killed with SIGKILL mid-cut', () => {
  it('restarts from the state and WELCOME: contiguous sequences, and the replica equals the image', async (t) => {
    const ps = await harness();
    const dir = await tempDir('agent-kill');
    const config: AgentConfig = {
      generation: 1,
      paused: false,
      throttleBytesPerSec: 0,
      crashConsistentFrequencySeconds: 1,
      appConsistentFrequencyMinutes: 0,
      disks: [{ name: 'sda', storeDisk: DISK }],
      processServer: { host: '127.0.0.1', port: ps.server.port, serverName: 'localhost' },
    };
    const vault = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(config));
      });
    });
    await new Promise<void>((r) => vault.listen(0, '127.0.0.1', () => r()));
    t.after(async () => {
      await new Promise((r) => vault.close(r));
      await ps.cleanup();
      await rm(dir, { recursive: true, force: true });
    });
    const image = join(dir, 'sda.img');
    writeFileSync(image, randomBytes(48 * MiB)); // three 16 MiB segments
    const stateDir = join(dir, 'state');
    new StateDir(stateDir).saveIdentity(
      {
        machineId: MACHINE,
        itemId: ITEM,
        vaultUrl: `http://127.0.0.1:${(vault.address() as AddressInfo).port}`,
        enrolledAt: new Date().toISOString(),
        keyPem: ps.pki.agent.keyPem,
        certificatePem: ps.pki.agent.certPem,
        caPem: ps.pki.ca.caPem,
        credential: CREDENTIAL,
      },
      config,
    );
    // 8 MiB/s: the full cut takes about 6 s, time enough to kill the agent in the middle of it.
    writeFileSync(join(stateDir, 'agent.json'), JSON.stringify({ disks: [{ name: 'sda', tracker: { kind: 'scan', path: image } }], maxBytesPerSec: 8 * MiB }));
    const start = () => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'lifeboat-cli.ts'), 'agent', 'run', '--state-dir', stateDir, '--json'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '' },
      });
      const out = { stdout: '', stderr: '' };
      child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
      const exited = new Promise<number | null>((r) => child.on('exit', (code, signal) => r(code ?? (signal ? -1 : null))));
      const events = (): Record<string, unknown>[] =>
        out.stdout
          .split('\n')
          .filter((l) => l.trim() !== '')
          .map((l) => JSON.parse(l) as Record<string, unknown>);
      return { child, out, exited, events };
    };

    const first = start();
    await waitFor('the first segment of the full cut acknowledged', () => first.events().some((e) => e.event === 'progress'), 60_000);
    first.child.kill('SIGKILL');
    await first.exited;
    assert.equal(first.events().filter((e) => e.event === 'cut-committed').length, 0, 'killed before the cut ended');
    const inFlight = new StateDir(stateDir).diskState('sda')?.inFlight;
    assert.ok(inFlight, 'the cut in flight is on record');

    const second = start();
    try {
      await waitFor('a cut committed after the restart', () => second.events().some((e) => e.event === 'cut-committed' && e.full === true), 60_000);
    } finally {
      second.child.kill('SIGTERM');
    }
    assert.equal(await second.exited, 0, second.out.stderr);
    const recovered = second.events().find((e) => e.event === 'recovered');
    assert.equal(recovered?.cutId, inFlight.cutId);
    await ps.server.drained();
    const segs = await storedSegments(ps.repo, DISK);
    assert.deepEqual(
      segs.map((s) => s.sequence),
      segs.map((_, i) => i + 1),
    );
    const { bytes } = replay(
      segs.map((s) => ({ ...s, disk: DISK, capturedAtMs: s.createdAtMs, flags: s.flags ?? 0 })),
      48 * MiB,
    );
    assert.ok(bytes.equals(readFileSync(image)), 'the replayed segments equal the image');
  });
});
