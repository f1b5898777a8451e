/**
 * The end-to-end proof of recovery (docs/recovery.md, "How it is proved"), with
 * real processes only: a tiny Linux machine built from Debian's packages (boot
 * disk + ext4 data disk) runs under QEMU while a workload inside it appends
 * numbered, checksummed records to its data disk and acknowledges each on the
 * console; `lifeboat server --compute qemu` protects it through `lifeboat agent
 * run` with the qemu change tracker on the machine's QMP socket. Then, through
 * the CLI only:
 * 1. test failover at latest-processed: the copy boots in the isolated network,
 *    every record acknowledged before the point's capture is in it, intact; the
 *    primary keeps running and writing, untouched; cleanup leaves nothing;
 * 2. a two-group recovery plan (a script step, a manual step acknowledged with
 *    `lifeboat job ack`), test failover and cleanup of the whole plan;
 * 3. failover with source shutdown, change of point, commit; the old source is
 *    fenced: its stream makes no new point;
 * 4. reprotect, failback: the records the replica wrote after failover are on
 *    the primary's disk, the bytes shipped are in proportion to what changed.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync, type Dirent } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BIN, lifeboat, lifeboatServe, stop, type CliResult } from '../helpers/cli.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { buildGuestImage } from '../helpers/guest.js';
import type { DrillReport, Job } from '../../src/core/model.js';
import { PrimaryMachine, buildPrimaryGuest, readRecordsFile, verifyRecords, PRIMARY_MARKER, acksIn } from '../helpers/machine.js';

const MiB = 2 ** 20;
const DATA_DISK_BYTES = 64 * MiB;
const SECOND_MARKER = 'LIFEBOAT-E2E-SECOND-BOOTED';

interface PointRow {
  pointId: string;
  disk: string;
  createdAt: string;
  capturedAt?: string;
  consistency: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let onPoll: (() => void) | undefined;

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number, detail?: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    onPoll?.();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `\n${detail()}` : ''}`);
    await sleep(500);
  }
}

/** Pids of QEMU processes whose command line mentions `needle`. */
function qemuProcesses(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue;
    }
    if (cmdline.includes('qemu-system') && cmdline.includes(needle)) pids.push(Number(entry));
  }
  return pids;
}

/** Every path under `dir` whose name contains `needle`. */
function pathsNamed(dir: string, needle: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.name.includes(needle)) out.push(p);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

/** The bytes shipped that a job or report states (the largest such count found). */
function bytesShipped(...docs: unknown[]): number {
  let found = -1;
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) {
        if (/^(bytesShipped|shippedBytes)$/.test(k) && typeof x === 'number') found = Math.max(found, x);
        else visit(x);
      }
    }
  };
  docs.forEach(visit);
  assert.ok(found >= 0, `no bytes-shipped count in ${JSON.stringify(docs).slice(0, 2000)}`);
  return found;
}

interface Agent {
  child: ChildProcess;
  log: () => string;
}

describe('end-to-end recovery of a tiny Linux machine (server, agent, QEMU; CLI only)', { concurrency: false }, () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: Awaited<ReturnType<typeof lifeboatServe>> | undefined;
  let serverLog = '';
  const env: Record<string, string> = {};
  let dataDir: string;
  let store: string;
  let passFile: string;
  let primary: PrimaryMachine;
  let agent: Agent | undefined;
  const agents: Agent[] = [];
  let itemId: string;
  let agentConfig: string;
  let agentStateDir: string;

  const cli = (args: string[]): CliResult => lifeboat(args, env);
  const ok = (args: string[]): CliResult => {
    const r = cli(args);
    assert.equal(r.status, 0, `lifeboat ${args.join(' ')} exited ${r.status}:\n${r.stderr}\n${r.stdout}`);
    return r;
  };
  const okJson = <T>(args: string[]): T => JSON.parse(ok([...args, '--json']).stdout) as T;
  const item = (id = itemId) => okJson<{ state: string; generation?: number; rpoSeconds: number | null }>(['item', 'show', id]);
  const points = (disk: string): PointRow[] => okJson<PointRow[]>(['point', 'list', '--disk', disk, '--store', store, '--passphrase-file', passFile]);
  /** Fails at once when an agent died (instead of waiting for a timeout). */
  const agentsAlive = (): void => {
    for (const a of agents) {
      if (a.child.exitCode !== null && a.child.exitCode !== 0) assert.fail(`an agent exited with ${a.child.exitCode}:\n${a.log().slice(-3000)}`);
    }
  };
  const diag = (): string =>
    `--- primary console ---\n${primary?.consoleTail(1500) ?? ''}\n--- agent ---\n${agent?.log().slice(-3000) ?? ''}\n--- server ---\n${serverLog.slice(-4000)}`;

  const startAgent = (config: string, stateDir: string): Agent => {
    let log = '';
    const child = spawn(process.execPath, [BIN, 'agent', 'run', '--config', config, '--state-dir', stateDir, '--json'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer) => (log = (log + d.toString()).slice(-40_000));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const a = { child, log: () => log };
    agents.push(a);
    return a;
  };
  const stopAgent = async (a: Agent | undefined): Promise<void> => {
    if (!a || a.child.exitCode !== null || a.child.signalCode !== null) return;
    const exited = new Promise((r) => a.child.once('exit', r));
    a.child.kill('SIGTERM');
    const timer = setTimeout(() => a.child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };

  /** Enrolls an agent for a new item of machine `name` and returns the item id. */
  const protect = async (name: string, agentJson: object, dir: string): Promise<{ itemId: string; config: string; stateDir: string }> => {
    ok(['machine', 'add', '--config-server', 'cs-1', name, '--ip', '127.0.0.1', '--os', 'debian-12']);
    const enabled = okJson<{ items: { id: string }[]; jobs: { id: string }[] }>([
      'replication', 'enable', '--vault', 'west', '--policy', 'seconds', '--config-server', 'cs-1', '--manual-install', name,
    ]);
    const id = (enabled.items[0] as { id: string }).id;
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify(agentJson, null, 2));
    const stateDir = join(dir, 'agent-state');
    const tokenFile = join(dir, 'enroll.token');
    writeFileSync(tokenFile, `${String(okJson<{ token: string }>(['item', 'enroll-token', id]).token)}\n`, { mode: 0o600 });
    ok(['agent', 'enroll', '--vault', String(server?.json.url), '--item', id, '--token-file', tokenFile, '--config', config, '--state-dir', stateDir]);
    return { itemId: id, config, stateDir };
  };

  before(async () => {
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    requireTool('qemu-img', 'qemu-utils');
    requireTool('debugfs', 'e2fsprogs');
    tmp = makeTempDir('e2e-recovery');
    onPoll = agentsAlive;
    Object.assign(env, { LIFEBOAT_CONFIG_DIR: join(tmp.path, 'config'), LIFEBOAT_SERVER: '', LIFEBOAT_TOKEN: '', LIFEBOAT_PROFILE: '' });

    const guest = await buildPrimaryGuest(join(tmp.path, 'primary-disks'), { dataDiskBytes: DATA_DISK_BYTES });
    primary = await PrimaryMachine.create({ dir: join(tmp.path, 'primary'), guest });

    dataDir = join(tmp.path, 'vault');
    server = await lifeboatServe(
      ['server', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--process-server-port', '0', '--compute', 'qemu', '--json'],
      env,
    );
    server.child.stderr?.on('data', (d: Buffer) => (serverLog = (serverLog + d.toString()).slice(-40_000)));
    ok(['login', '--server', String(server.json.url), '--token', String(server.json.adminToken)]);
    passFile = join(tmp.path, 'store.pass');
    writeFileSync(passFile, 'e2e-Recovery-passphrase-1\n', { mode: 0o600 });
    store = `file://${join(tmp.path, 'store')}`;
    ok(['vault', 'create', 'west', '--location', 'west', '--store', store, '--passphrase-file', passFile]);
    const keyFile = join(tmp.path, 'reg.key');
    ok(['registration-key', 'create', '--vault', 'west', '--out', keyFile]);
    ok(['config-server', 'register', '--key', keyFile, '--name', 'cs-1', '--address', '127.0.0.1', '--credential-out', join(tmp.path, 'cs.cred'), '--server', String(server.json.url)]);
    ok(['policy', 'create', '--vault', 'west', 'seconds', '--rpo-threshold', '30s', '--retention', '24h', '--app-consistent', 'off', '--crash-consistent', '2s']);

    // The primary runs and writes before it is protected.
    await primary.start();
    await primary.waitForAck(3);
    const p = await protect('web-1', { disks: primary.agentDisks(), machine: primary.machineCommands }, join(tmp.path, 'primary'));
    itemId = p.itemId;
    agentConfig = p.config;
    agentStateDir = p.stateDir;
    agent = startAgent(agentConfig, agentStateDir);
    await until('web-1 protected (initial replication done)', () => (item().state === 'protected' ? true : undefined), 300_000, diag);
  });

  after(async () => {
    for (const a of agents) await stopAgent(a).catch(() => undefined);
    await primary?.dispose().catch(() => undefined);
    if (server) await stop(server.child);
    // Nothing of this test may outlive it: any QEMU started for it (recovered machines included) is killed.
    if (tmp) {
      for (const pid of qemuProcesses(tmp.path)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      tmp.cleanup();
    }
  });

  /** Runs a CLI command without blocking the event loop (the console tailer keeps stamping ACKs). */
  const cliAsync = (args: string[]): Promise<CliResult> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr, json: () => JSON.parse(stdout) as Record<string, unknown> }));
    });
  /** Waits for a job to end; it must succeed. */
  const watch = async (jobId: string): Promise<Job> => {
    const r = await cliAsync(['job', 'watch', jobId, '--json']);
    assert.equal(r.status, 0, `job ${jobId} did not succeed:\n${r.stderr}\n${r.stdout}\n${diag()}`);
    return JSON.parse(r.stdout) as Job;
  };
  const report = (reportIdOrItem: { item: string }): DrillReport => {
    const reports = okJson<DrillReport[] | { items: DrillReport[] }>(['drill', 'report', reportIdOrItem.item]);
    const list = Array.isArray(reports) ? reports : reports.items;
    assert.ok(list.length > 0, 'the item has a drill report');
    return list[0] as DrillReport;
  };

  /** The console of a machine the compute driver runs (console.log in its state directory). */
  const machineConsole = (machineId: string): string => {
    const file = pathsNamed(dataDir, machineId)
      .map((p) => join(p, 'console.log'))
      .find((p) => existsSync(p));
    return file === undefined ? '' : readFileSync(file, 'latin1');
  };
  /** Records the recovered machine acknowledged after its last boot: the record it resumed after, and the last ACK. */
  const replicaRecords = (machineId: string): { resumedAfter: number; lastAck: number } | undefined => {
    const text = machineConsole(machineId);
    const boots = [...text.matchAll(/lifeboat-records: resuming after record (\d+)/g)];
    const lastBoot = boots[boots.length - 1];
    if (!lastBoot || lastBoot.index === undefined) return undefined;
    const acks = acksIn(text.slice(lastBoot.index));
    const resumedAfter = Number(lastBoot[1]);
    return { resumedAfter, lastAck: acks.length === 0 ? resumedAfter : (acks[acks.length - 1] as number) };
  };
  let failoverMachine: string;
  let failoverRecords: { resumedAfter: number; lastAck: number };

  it('protects the running machine: points of both disks every few seconds, the data disk\'s hold every acknowledged record', async () => {
    const disk = `${itemId}.data`;
    const since = Date.now();
    const fresh = await until('two new points of the data disk', () => {
      const ps = points(disk).filter((pt) => Date.parse(pt.capturedAt ?? pt.createdAt) > since);
      return ps.length >= 2 ? ps : undefined;
    }, 120_000, diag);
    assert.ok(points(`${itemId}.root`).length >= 1, 'the boot disk has a point');
    const pt = fresh[fresh.length - 1] as PointRow;
    const image = join(tmp.path, 'protect-point.raw');
    ok(['disk', 'restore', pt.pointId, '--to', image, '--store', store, '--passphrase-file', passFile]);
    const captured = Date.parse(pt.capturedAt ?? pt.createdAt);
    const mustHold = primary.ackedBefore(captured);
    assert.ok(mustHold >= 3, `records were acknowledged before the point (${mustHold})`);
    verifyRecords(await readRecordsFile(image), mustHold);
  });

  it('test failover at latest-processed: the copy boots isolated, holds every record acknowledged before its point, the primary is untouched, cleanup leaves nothing', async () => {
    ok(['drill', 'settings', itemId, '--boot-marker', PRIMARY_MARKER, '--boot-timeout', '600']);
    const primaryPid = primary.pid();
    const primaryBoots = primary.boots();
    assert.ok(primaryPid !== null, 'the primary runs');

    const started = Date.now();
    const job = okJson<Job>(['test-failover', 'start', itemId, '--point', 'latest-processed']);
    const done = await watch(job.id);
    assert.equal(done.state, 'succeeded');

    const r = report({ item: itemId });
    assert.equal(r.operation, 'test-failover');
    assert.equal(r.outcome, 'passed', `report: ${JSON.stringify({ ...r, consoleLog: r.consoleLog.slice(-2000) }, null, 2)}`);
    assert.equal(r.network, 'isolated');
    assert.equal(r.driver, 'qemu');
    assert.ok(r.machineId, 'the report names the test machine');
    const machineId = r.machineId;
    const dataPoint = r.point?.disks.find((d) => d.disk === `${itemId}.data`);
    assert.ok(dataPoint, `the report names the data disk's point: ${JSON.stringify(r.point)}`);
    assert.ok(r.point?.disks.some((d) => d.disk === `${itemId}.root`), 'and the boot disk\'s');
    const captured = Date.parse(dataPoint.capturedAt);
    assert.ok(captured <= started, 'latest-processed is a point made before the test failover started');
    assert.ok(r.rpoSeconds !== null && r.rpoSeconds >= 0 && r.rpoSeconds < 120, `RPO ${r.rpoSeconds} s`);
    assert.ok(r.rtoSeconds !== null && r.rtoSeconds > 0, `RTO ${r.rtoSeconds} s`);
    assert.match(r.consoleLog, new RegExp(`${PRIMARY_MARKER} payload=lifeboat-e2e-primary`), 'the copy printed the boot marker');

    // The copy booted from the point: its workload resumed after the point's last record.
    const mustHold = primary.ackedBefore(captured);
    const resumed = /lifeboat-records: resuming after record (\d+)/.exec(r.consoleLog);
    assert.ok(resumed, `the copy's workload started:\n${r.consoleLog.slice(-2000)}`);
    assert.ok(Number(resumed[1]) >= mustHold, `the copy resumed after record ${resumed[1]}, but ${mustHold} was acknowledged before the point`);

    // The point's data disk, read back from the store: every acknowledged record there and intact.
    const image = join(tmp.path, 'test-failover-point.raw');
    ok(['disk', 'restore', dataPoint.pointId, '--to', image, '--store', store, '--passphrase-file', passFile]);
    const held = verifyRecords(await readRecordsFile(image), mustHold);
    assert.ok(held.count >= 3, `the point holds records (${held.count})`);

    // The primary was not touched: same process, same boot, still writing, nothing missing.
    assert.equal(primary.pid(), primaryPid, 'the primary QEMU is the same process');
    assert.equal(primary.boots(), primaryBoots, 'the primary did not reboot');
    const lastBefore = primary.lastAck();
    await primary.waitForAck(lastBefore + 3);
    verifyRecords(await readRecordsFile(primary.dataFile), lastBefore);
    assert.equal(item().state, 'test-failover');

    // Cleanup: nothing of the test machine is left.
    const cleanup = okJson<Job>(['test-failover', 'cleanup', itemId, '--notes', 'e2e drill']);
    await watch(cleanup.id);
    assert.deepEqual(qemuProcesses(machineId), [], 'no QEMU process of the test machine');
    assert.deepEqual(pathsNamed(dataDir, machineId), [], 'nothing of the test machine under the data directory');
    assert.equal(item().state, 'protected');
    const after = report({ item: itemId });
    assert.equal(after.id, r.id);
    assert.equal(after.notes, 'e2e drill');
    assert.ok(after.cleanupJobId, 'the report names its cleanup job');
  });

  it('a two-group recovery plan: a script, the first group, a manual step acknowledged, the second group; then cleanup of the whole plan', async () => {
    // The second machine: a static copy of a guest image, protected with the scan tracker by a second agent.
    const secondDir = join(tmp.path, 'second');
    await mkdir(secondDir, { recursive: true });
    const second = await buildGuestImage({ dir: secondDir, marker: SECOND_MARKER, payload: 'lifeboat-e2e-second', shell: true });
    const p2 = await protect('web-2', { disks: [{ name: 'root', tracker: { kind: 'scan', path: second.imagePath } }] }, secondDir);
    const agent2 = startAgent(p2.config, p2.stateDir);
    await until('web-2 protected', () => (item(p2.itemId).state === 'protected' ? true : undefined), 300_000, () => agent2.log().slice(-3000));
    ok(['drill', 'settings', p2.itemId, '--boot-marker', SECOND_MARKER, '--boot-timeout', '600']);

    // The script step: an executable the administrator put in <data dir>/scripts/.
    const scriptsDir = join(dataDir, 'scripts');
    await mkdir(scriptsDir, { recursive: true });
    const scriptLog = join(tmp.path, 'plan-script.log');
    writeFileSync(join(scriptsDir, 'e2e-pre.sh'), `#!/bin/sh\necho "$LIFEBOAT_PLAN_ID $LIFEBOAT_OPERATION $LIFEBOAT_GROUP" >> '${scriptLog}'\n`);
    await chmod(join(scriptsDir, 'e2e-pre.sh'), 0o755);

    const planFile = join(tmp.path, 'plan.json');
    const manualAction = 'check the web tier answers before the next group';
    writeFileSync(
      planFile,
      JSON.stringify({
        groups: [
          { name: 'web', itemIds: [itemId], preScripts: ['e2e-pre.sh'], postScripts: [], manualActions: [manualAction] },
          { name: 'backend', itemIds: [p2.itemId], preScripts: [], postScripts: [], manualActions: [] },
        ],
      }),
    );
    const plan = okJson<{ id: string }>(['plan', 'create', 'e2e-plan', '--vault', 'west', '--file', planFile]);

    const job = okJson<Job>(['plan', 'test-failover', plan.id]);
    // The job pauses at the manual step until it is acknowledged; the second group has not started.
    const waiting = await until(
      'the plan to wait at its manual step',
      () => {
        const j = okJson<Job>(['job', 'show', job.id]);
        assert.notEqual(j.state, 'failed', JSON.stringify(j, null, 2));
        const step = j.steps.findIndex((st) => st.state === 'running' && st.name.includes(manualAction));
        return step >= 0 ? { job: j, step } : undefined;
      },
      600_000,
      diag,
    );
    assert.equal(item().state, 'test-failover', 'the first group failed over before the manual step');
    assert.equal(item(p2.itemId).state, 'protected', 'the second group waits for the manual step');
    assert.match(readFileSync(scriptLog, 'utf8'), new RegExp(`^${plan.id} test-failover web$`, 'm'), 'the pre-script ran with the plan, operation and group');
    const ackedAt = Date.now();
    ok(['job', 'ack', job.id, '--step', String(waiting.step)]);
    await watch(job.id);
    assert.equal(item(p2.itemId).state, 'test-failover');

    const r1 = report({ item: itemId });
    const r2 = report({ item: p2.itemId });
    for (const r of [r1, r2]) {
      assert.equal(r.planId, plan.id, 'the drill ran for the plan');
      assert.equal(r.outcome, 'passed', JSON.stringify({ ...r, consoleLog: r.consoleLog.slice(-1500) }));
    }
    assert.match(r2.consoleLog, new RegExp(SECOND_MARKER));
    assert.ok(Date.parse(r2.startedAt) >= ackedAt - 1000, 'the second group started after the acknowledgement');

    const cleanup = okJson<Job>(['plan', 'cleanup', plan.id]);
    await watch(cleanup.id);
    assert.equal(item().state, 'protected');
    assert.equal(item(p2.itemId).state, 'protected');
    for (const r of [r1, r2]) assert.deepEqual(qemuProcesses(r.machineId ?? 'no machine id'), [], `no QEMU of ${r.machineId} is left`);
    await stopAgent(agent2);
  });

  it('failover with source shutdown, change of point, commit; the old source is fenced', async () => {
    const pointsBefore = points(`${itemId}.data`);
    assert.ok(pointsBefore.length >= 3, `several points to choose from (${pointsBefore.length})`);
    const job = okJson<Job>(['failover', 'start', itemId, '--point', 'latest-processed', '--shutdown-source']);
    await watch(job.id);
    assert.equal(item().state, 'failed-over');
    // The source was shut down through its agent's shutdownCommand.
    await until('the primary to be off', () => (primary.running() ? undefined : true), 60_000, diag);
    const r = report({ item: itemId });
    assert.equal(r.operation, 'failover');
    assert.ok(r.machineId, 'the failover report names the replica machine');
    failoverMachine = r.machineId;
    const chosen = r.point?.disks.find((d) => d.disk === `${itemId}.data`);
    assert.ok(chosen, JSON.stringify(r.point));
    const booted = await until('the replica to resume the records workload', () => replicaRecords(failoverMachine), 300_000, () => machineConsole(failoverMachine).slice(-2000));
    assert.ok(booted.resumedAfter >= primary.ackedBefore(Date.parse(chosen.capturedAt)), 'the replica holds every record acknowledged before its point');

    // Change of point: an earlier point; the replica restarts there.
    const earlier = pointsBefore.filter((p) => Date.parse(p.capturedAt ?? p.createdAt) < Date.parse(chosen.capturedAt) - 2000);
    const target = earlier[earlier.length - 1];
    assert.ok(target, 'an earlier point of the data disk');
    const targetImage = join(tmp.path, 'change-point.raw');
    ok(['disk', 'restore', target.pointId, '--to', targetImage, '--store', store, '--passphrase-file', passFile]);
    const targetHeld = verifyRecords(await readRecordsFile(targetImage), primary.ackedBefore(Date.parse(target.capturedAt ?? target.createdAt)));
    const change = okJson<Job>(['failover', 'change-point', itemId, '--point', target.pointId]);
    await watch(change.id);
    assert.equal(item().state, 'failed-over');
    const rebooted = await until(
      'the replica to resume at the earlier point',
      () => {
        const rec = replicaRecords(failoverMachine);
        return rec && rec.resumedAfter === targetHeld.count ? rec : undefined;
      },
      300_000,
      () => machineConsole(failoverMachine).slice(-2000),
    );
    assert.equal(rebooted.resumedAfter, targetHeld.count, 'the replica runs on the chosen point\'s data');

    // Commit: the other points are gone, the chosen ones stay.
    const commit = okJson<Job>(['failover', 'commit', itemId]);
    await watch(commit.id);
    assert.equal(item().state, 'committed');
    const left = points(`${itemId}.data`);
    assert.deepEqual(left.map((p) => p.pointId), [target.pointId], 'only the committed point of the data disk is left');
    assert.equal(points(`${itemId}.root`).length, 1, 'one point of the boot disk is left');

    // The old source comes back (someone starts it): its agent stays fenced and no point is made from it.
    await primary.start();
    await primary.waitForAck(primary.lastAck() + 5);
    await sleep(10_000);
    assert.deepEqual(points(`${itemId}.data`).map((p) => p.pointId), [target.pointId], 'no point from the fenced source');
    assert.match(agent?.log() ?? '', /fenced/, 'the agent was told it is fenced');
    await primary.stop();
    assert.equal(primary.running(), false);
  });

  it('reprotect, then failback: the records written after failover are back at the primary, the bytes shipped follow the change', async () => {
    const job = okJson<Job>(['reprotect', itemId]);
    await watch(job.id);
    assert.equal(item().state, 'reprotected');

    // The replica keeps writing while it is protected in reverse.
    const now = replicaRecords(failoverMachine);
    assert.ok(now, 'the replica runs its workload');
    await until('the replica to write more records', () => {
      const rec = replicaRecords(failoverMachine);
      return rec && rec.lastAck >= now.lastAck + 20 ? rec : undefined;
    }, 300_000);

    const primaryBoots = primary.boots();
    const failback = okJson<Job>(['failback', itemId]);
    const done = await watch(failback.id);
    // Everything the replica acknowledged before it was shut down.
    failoverRecords = replicaRecords(failoverMachine) as { resumedAfter: number; lastAck: number };
    assert.ok(failoverRecords.lastAck > failoverRecords.resumedAfter + 20, JSON.stringify(failoverRecords));
    assert.deepEqual(qemuProcesses(failoverMachine), [], 'the replica machine is stopped');

    // The primary was started by its agent (startCommand) on the written-back disks.
    await primary.waitForBoot(primaryBoots, 300_000);
    const resumed = [...primary.consoleTail(1_000_000).matchAll(/lifeboat-records: resuming after record (\d+)/g)];
    assert.ok(Number(resumed[resumed.length - 1]?.[1]) >= failoverRecords.lastAck, `the primary resumed after the replica's last record ${failoverRecords.lastAck}`);
    await primary.waitForAck(failoverRecords.lastAck + 3);
    verifyRecords(await readRecordsFile(primary.dataFile), failoverRecords.lastAck);

    const shipped = bytesShipped(done, report({ item: itemId }));
    const recordBytes = (failoverRecords.lastAck - failoverRecords.resumedAfter) * 100;
    assert.ok(shipped >= recordBytes, `bytes shipped ${shipped} cover the records written after failover (${recordBytes})`);
    assert.ok(shipped < DATA_DISK_BYTES / 4, `bytes shipped ${shipped} are far below the disks' size`);

    await until('the item to be protected again', () => (item().state === 'protected' ? true : undefined), 300_000, diag);
    const since = Date.now();
    const next = await until('a new point from the primary', () => points(`${itemId}.data`).find((p) => Date.parse(p.capturedAt ?? p.createdAt) > since), 120_000, diag);
    const image = join(tmp.path, 'after-failback.raw');
    ok(['disk', 'restore', next.pointId, '--to', image, '--store', store, '--passphrase-file', passFile]);
    verifyRecords(await readRecordsFile(image), Math.max(failoverRecords.lastAck, primary.ackedBefore(Date.parse(next.capturedAt ?? next.createdAt))));
  });
});

