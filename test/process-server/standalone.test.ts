/**
 * The standalone process server (`lifeboat process-server run`) as a real child process:
 * registered with a live vault under a configuration server (the credential file that
 * `lifeboat config-server register --credential-out` writes), an item naming it, the real
 * agent replicating a scan-tracked image through it, SIGKILLs at random moments while the
 * image keeps changing, restarts on the same spool; refusals of a replaced or foreign
 * agent certificate; its heartbeat on the vault's row.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Agent, type AgentEvent } from '../../src/agent/agent.js';
import { parseAgentFileConfig } from '../../src/agent/config.js';
import { enroll } from '../../src/agent/enroll.js';
import { replicationTransport } from '../../src/agent/replication-transport.js';
import { StateDir } from '../../src/agent/state.js';
import { registryTrackers } from '../../src/agent/trackers.js';
import { HttpVaultClient } from '../../src/agent/vault-client.js';
import { isLifeboatError } from '../../src/core/errors.js';
import { ReplicationClient } from '../../src/protocol/client.js';
import { seededRandom } from '../../src/storage/wrappers/faults.js';
import { PointReader } from '../../src/store/point-reader.js';
import { verifyStore } from '../../src/store/verify.js';
import { freePort } from '../helpers/env.js';
import { agentCsr, startLiveVault, type LiveVault } from '../vault/api/harness.js';
import { waitFor } from '../vault/replication/harness.js';

const MiB = 2 ** 20;
const DISK_BYTES = 32 * MiB;
const PASSPHRASE = 'standalone-ps-Passphrase-7e2a';
const CLI = fileURLToPath(new URL('../agent/lifeboat-cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Running {
  child: ChildProcess;
  id: string;
  port: number;
  stderr: string[];
}

/** `lifeboat <args>` from source; resolves with its exit code and output. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Starts `lifeboat process-server run … --json` and waits for its one JSON document (id, port). */
function startStandalone(args: string[]): Promise<Running> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'process-server', 'run', ...args, '--json'], {
    cwd: ROOT,
    env: { ...process.env, LIFEBOAT_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr?.on('data', (d: Buffer) => stderr.push(d.toString()));
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      try {
        const doc = JSON.parse(out) as { id: string; port: number };
        child.stdout?.off('data', onData);
        resolve({ child, id: doc.id, port: doc.port, stderr });
      } catch {
        // not the whole document yet
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code, signal) => reject(new Error(`process server exited (${code ?? signal}) before listening: ${stderr.join('')}`)));
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

async function setup(v: LiveVault) {
  const { call, ownerToken } = v;
  const vault = await call('POST', '/api/v1/vaults', ownerToken, { name: 'standalone', location: 'west', storeUrl: `file://${join(v.tmpDir, 'store')}`, storePassphrase: PASSPHRASE });
  assert.equal(vault.status, 201, vault.text);
  const vaultId = String(vault.json.id);
  const key = await call('POST', `/api/v1/vaults/${vaultId}/registration-keys`, ownerToken, {});
  assert.equal(key.status, 201, key.text);
  // The configuration server registers as an operator would, and keeps its credential in a file.
  const credentialFile = join(v.tmpDir, 'cs.credential');
  const reg = await cli(['config-server', 'register', '--server', v.server.url, '--key', String(key.json.key), '--name', 'cs', '--address', '10.0.0.1', '--credential-out', credentialFile, '--json']);
  assert.equal(reg.code, 0, reg.stderr);
  const configServerId = (JSON.parse(reg.stdout) as { server: { id: string } }).server.id;
  const passphraseFile = join(v.tmpDir, 'store.passphrase');
  writeFileSync(passphraseFile, PASSPHRASE + '\n', { mode: 0o600 });
  return { vaultId, configServerId, credentialFile, passphraseFile };
}

test('standalone process server: the agent replicates through it, survives kill -9 of it at random moments without a full resync', async () => {
  const seed = Date.now() % 100_000;
  const random = seededRandom(seed);
  const v = await startLiveVault('standalone-ps');
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  let ps: Running | undefined;
  let writer: NodeJS.Timeout | undefined;
  try {
    const { vaultId, configServerId, credentialFile, passphraseFile } = await setup(v);
    const port = await freePort();
    const stateDir = join(v.tmpDir, 'ps');
    const args = [
      '--vault', v.server.url,
      '--credential-file', credentialFile,
      '--name', 'ps-east',
      '--listen', `127.0.0.1:${port}`,
      '--address', '127.0.0.1',
      '--san', 'localhost',
      '--state-dir', stateDir,
      '--spool-dir', join(v.tmpDir, 'spool'),
      '--spool-limit', '256M',
      '--workers', '1',
      '--passphrase-file', passphraseFile,
    ];
    ps = await startStandalone(args);
    assert.equal(ps.port, port);
    const repos = v.server.repos;
    const row = await repos.processServers.get(ps.id);
    assert.equal(row.configServerId, configServerId);
    assert.equal(row.address, `127.0.0.1:${port}`);
    assert.equal(statSync(join(stateDir, 'key.pem')).mode & 0o777, 0o600, 'the key is 0600');

    // A heartbeat updates the row (spool limit, heartbeat time, health).
    const beat = await waitFor('a process-server heartbeat', async () => {
      const r = await repos.processServers.get(ps!.id);
      return r.lastHeartbeatAt ? r : undefined;
    });
    assert.equal(beat.spoolLimitBytes, 256 * MiB);
    assert.equal(beat.health, 'healthy');

    // The image: 16 MiB of data in a 32 MiB disk.
    const image = join(v.tmpDir, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, DISK_BYTES);
    const fd = openSync(image, 'r+');
    writeSync(fd, randomBytes(16 * MiB), 0, 16 * MiB, 4 * MiB);
    closeSync(fd);

    const machine = await repos.machines.create({ configServerId, name: 'web', privateIp: '10.0.0.9', os: 'debian-12', supported: true });
    const policy = await repos.policies.create({ vaultId, name: 'fast', rpoThresholdSeconds: 60, retentionHours: 24, appConsistentFrequencyMinutes: 0, crashConsistentFrequencySeconds: 1 });
    const item = await repos.items.create({
      vaultId,
      machineId: machine.id,
      policyId: policy.id,
      processServerId: ps.id,
      state: 'initial-replication',
      compute: { targetName: 'web', size: 'small', network: null, subnet: null, ip: null },
      disks: [],
    });
    await repos.items.update(item.id, { generation: 1 });
    const token = String((await v.call('POST', `/api/v1/items/${item.id}/enrollment-token`, v.ownerToken, {})).json.token);
    const config = parseAgentFileConfig({ disks: [{ name: 'sda', tracker: { kind: 'scan', path: image } }] });
    const agentDir = join(v.tmpDir, 'agent');
    const enrolled = await enroll({ vaultUrl: v.server.url, itemId: item.id, token, config, stateDir: agentDir, vault: new HttpVaultClient(v.server.url) });
    assert.deepEqual(enrolled.config.processServer, { host: '127.0.0.1', port, serverName: 'localhost' }, 'the item names the standalone process server');
    const identity = new StateDir(agentDir).identity();
    const events: AgentEvent[] = [];
    const agent = new Agent({
      stateDir: agentDir,
      config,
      vault: new HttpVaultClient(identity.vaultUrl),
      connect: replicationTransport(identity),
      openTracker: registryTrackers(new StateDir(agentDir)),
      heartbeatIntervalMs: 200,
      minBackoffMs: 100,
      maxBackoffMs: 500,
      version: '0.1.0',
      onEvent: (e) => events.push(e),
    });
    running = agent.run(stop.signal);

    const repo = await v.server.stores.openVaultStore(vaultId);
    const disk = `${item.id}.sda`;
    const pointEqualsImage = async (): Promise<true | undefined> => {
      await v.server.replica.processNow(item.id);
      const point = await repo.latestPoint(disk);
      if (!point) return undefined;
      const reader = await PointReader.open(repo, point, { workers: 0 });
      try {
        return (await reader.read(0, DISK_BYTES)).equals(readFileSync(image)) ? true : undefined;
      } finally {
        await reader.close();
      }
    };
    await waitFor('the initial cut through the standalone process server', async () => (events.some((e) => e.event === 'cut-committed') ? true : undefined), 90_000);
    await waitFor('a point equal to the image', pointEqualsImage, 60_000);
    const firstCommitted = events.findIndex((e) => e.event === 'cut-committed');

    // The image keeps changing (16 KiB at a random 4 KiB-aligned place every 50 ms) while the process server is killed.
    const changing = openSync(image, 'r+');
    writer = setInterval(() => {
      const at = Math.floor(random() * ((DISK_BYTES - 16 * 1024) / 4096)) * 4096;
      writeSync(changing, randomBytes(16 * 1024), 0, 16 * 1024, at);
    }, 50);
    for (let kill = 0; kill < 3; kill++) {
      await new Promise((r) => setTimeout(r, 300 + random() * 1500));
      ps.child.kill('SIGKILL');
      await exited(ps.child);
      await new Promise((r) => setTimeout(r, random() * 500));
      ps = await startStandalone(args);
      assert.equal(ps.port, port, `seed ${seed}: the restart listens on the same port`);
    }
    await new Promise((r) => setTimeout(r, 1000));
    clearInterval(writer);
    writer = undefined;
    closeSync(changing);
    const stoppedAt = Date.now();
    // A cut captured after the last write, shipped and made a point.
    await waitFor(
      'a cut captured after the image stopped changing',
      async () => (events.some((e) => e.event === 'cut-committed' && e.capturedAtMs > stoppedAt + 50) ? true : undefined),
      60_000,
    );
    await waitFor(`seed ${seed}: the newest point equals the final image`, pointEqualsImage, 60_000);

    const report = await verifyStore(repo);
    assert.deepEqual(report.problems, [], `seed ${seed}: verifyStore is clean`);
    assert.equal(report.ok, true);
    // No full resync after the kills: the tracker kept its continuity, and no later cut
    // carried the whole disk (the scan driver marks every cut `full` because it reads the
    // whole image, but it ships only the chunks whose digest changed).
    const later = events.slice(firstCommitted + 1);
    assert.ok(!later.some((e) => e.event === 'tracker-opened' && e.continuity === 'lost'), `seed ${seed}: continuity was never lost`);
    const laterCuts = later.filter((e): e is Extract<AgentEvent, { event: 'cut-committed' }> => e.event === 'cut-committed');
    assert.ok(laterCuts.length >= 2, `seed ${seed}: cuts after the first: ${laterCuts.length}`);
    for (const c of laterCuts) assert.ok(c.bytes < 8 * MiB, `seed ${seed}: cut ${c.cutId} shipped ${c.bytes} bytes: a resync`);
    assert.ok(later.some((e) => e.event === 'disconnected'), 'the kills were seen by the agent');
    assert.ok(later.filter((e) => e.event === 'connected').length >= 2, 'the agent reconnected');
  } finally {
    if (writer) clearInterval(writer);
    stop.abort();
    await running?.catch(() => undefined);
    if (ps) {
      ps.child.kill('SIGTERM');
      await exited(ps.child);
    }
    await v.stop();
  }
});

test('standalone process server: a replaced certificate is refused within the grant cache time, an agent of another vault at once', async () => {
  const v = await startLiveVault('standalone-refusals');
  let ps: Running | undefined;
  try {
    const { configServerId, vaultId, credentialFile, passphraseFile } = await setup(v);
    // Port 0: the picked port is registered once known.
    ps = await startStandalone([
      '--vault', v.server.url,
      '--credential-file', credentialFile,
      '--name', 'ps-refuse',
      '--listen', '127.0.0.1:0',
      '--state-dir', join(v.tmpDir, 'ps'),
      '--passphrase-file', passphraseFile,
    ]);
    const port = ps.port;
    assert.notEqual(port, 0);
    assert.equal((await v.server.repos.processServers.get(ps.id)).address, `127.0.0.1:${port}`, 'the vault knows the picked port');
    const caPem = readFileSync(join(v.tmpDir, 'ps', 'ca.pem'), 'utf8');
    const connect = (agent: { machineId: string; certificatePem: string; keyPem: string }, disk: string) =>
      ReplicationClient.connect({
        host: '127.0.0.1',
        port,
        tls: { certPem: agent.certificatePem, keyPem: agent.keyPem, caPem },
        machineId: agent.machineId,
        disks: [{ disk, generation: 1 }],
      });
    const refusal = async (agent: { machineId: string; certificatePem: string; keyPem: string }, disk: string): Promise<string | undefined> => {
      try {
        const c = await connect(agent, disk);
        await c.close();
        return undefined;
      } catch (err) {
        if (isLifeboatError(err)) return err.code;
        throw err;
      }
    };

    const mine = await v.enrollAgent({ vaultId, serverId: configServerId });
    const disk = `${mine.itemId}.sda`;
    assert.equal(await refusal(mine, disk), undefined, 'the enrolled agent is welcomed');

    // Re-enrolled: the old certificate is replaced; refused once the cached grant (10 s) runs out.
    const token = String((await v.call('POST', `/api/v1/items/${mine.itemId}/enrollment-token`, v.ownerToken, {})).json.token);
    const { csrPem } = await agentCsr();
    const again = await v.call('POST', '/api/v1/agents/enroll', undefined, { itemId: mine.itemId, token, csrPem, hostname: 'h', disks: [{ name: 'sda', sizeBytes: 1 << 20, tracker: 'scan' }] });
    assert.equal(again.status, 201, again.text);
    const replacedAt = Date.now();
    await waitFor('the replaced certificate refused', async () => ((await refusal(mine, disk)) === 'AGENT_UNAUTHORIZED' ? true : undefined), 20_000);
    assert.ok(Date.now() - replacedAt < 13_000, `refused after ${Date.now() - replacedAt} ms`);

    // An agent of another vault (same vault server and CA, another configuration server): refused.
    const other = await v.registerServer();
    const foreign = await v.enrollAgent(other);
    assert.equal(await refusal(foreign, `${foreign.itemId}.sda`), 'AGENT_UNAUTHORIZED');

    // The routes refuse another configuration server's credential for this process server.
    const res = await v.call('POST', `/api/v1/process-servers/${ps.id}/heartbeat`, other.credential, {
      stats: { bytesIn: 0, segmentsIn: 0, segmentsUploaded: 0, spoolUsedBytes: 0, spoolLimitBytes: 1, spooledSegments: 0, uploadLagMs: 0, connectedAgents: 0, uploadErrors: 0 },
    });
    assert.equal(res.status, 404, res.text);
    const store = await v.call('GET', `/api/v1/process-servers/${ps.id}/vaults/${vaultId}/store`, readFileSync(credentialFile, 'utf8').trim());
    assert.equal(store.status, 200, store.text);
    assert.deepEqual(Object.keys(store.json), ['storeUrl'], 'only the store URL, never a passphrase');
  } finally {
    if (ps) {
      ps.child.kill('SIGTERM');
      await exited(ps.child);
      assert.equal(ps.child.exitCode, 0, `SIGTERM is a clean stop: ${ps.stderr.join('')}`);
    }
    await v.stop();
  }
});
