/**
 * What every end-to-end recovery test starts from (docs/recovery.md, "How it is
 * proved"): a `lifeboat server` (vault, built-in process server, replica
 * processor, the qemu compute driver) on a local store, a policy cutting every
 * 2 s, and the primary machine (test/helpers/machine.ts) running its records
 * workload, protected by `lifeboat agent run` with the qemu tracker on its QMP
 * sockets. Everything goes through the CLI; the helpers here only wrap it.
 *
 * Everything lives under one short directory in the system's temporary
 * directory: the compute driver's and the trackers' Unix sockets live there
 * (108-byte path limit). close() ends every process the world started (agents,
 * server, the primary, any QEMU whose command line names the directory) and
 * removes the directory.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, type Dirent } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DrillReport, Job } from '../../src/core/model.js';
import { BIN, lifeboat, lifeboatServe, type CliResult } from '../helpers/cli.js';
import { requireTool } from '../helpers/env.js';
import { PrimaryMachine, acksIn, buildPrimaryGuest } from '../helpers/machine.js';

const MiB = 2 ** 20;
export const DATA_DISK_BYTES = 64 * MiB;

export interface PointRow {
  pointId: string;
  disk: string;
  createdAt: string;
  capturedAt?: string;
  consistency: string;
}

export interface AgentProcess {
  readonly child: ChildProcess;
  log(): string;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Pids of QEMU processes whose command line mentions `needle`. */
export function qemuProcesses(needle: string): number[] {
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
export function pathsNamed(dir: string, needle: string): string[] {
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

/** A point's capture time (ms). */
export function capturedMs(p: PointRow | { capturedAt: string }): number {
  return Date.parse('createdAt' in p ? (p.capturedAt ?? p.createdAt) : p.capturedAt);
}

export class RecoveryWorld {
  readonly env: Record<string, string> = {};
  readonly dataDir: string;
  readonly store: string;
  readonly passFile: string;
  readonly agents: AgentProcess[] = [];
  primary!: PrimaryMachine;
  agent!: AgentProcess;
  itemId!: string;
  private server: Awaited<ReturnType<typeof lifeboatServe>> | undefined;
  private serverLog = '';

  private constructor(readonly dir: string) {
    this.dataDir = join(dir, 'vault');
    this.store = `file://${join(dir, 'store')}`;
    this.passFile = join(dir, 'store.pass');
  }

  /** Server, vault, policy, the primary running and protected (item `protected`). */
  static async start(): Promise<RecoveryWorld> {
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    requireTool('qemu-img', 'qemu-utils');
    requireTool('debugfs', 'e2fsprogs');
    const w = new RecoveryWorld(mkdtempSync(join(tmpdir(), 'lbe2e-')));
    try {
      await w.setUp();
    } catch (err) {
      await w.close();
      throw err;
    }
    return w;
  }

  private async setUp(): Promise<void> {
    Object.assign(this.env, { LIFEBOAT_CONFIG_DIR: join(this.dir, 'config'), LIFEBOAT_SERVER: '', LIFEBOAT_TOKEN: '', LIFEBOAT_PROFILE: '' });
    const guest = await buildPrimaryGuest(join(this.dir, 'primary-disks'), { dataDiskBytes: DATA_DISK_BYTES });
    this.primary = await PrimaryMachine.create({ dir: join(this.dir, 'primary'), guest });

    this.server = await lifeboatServe(
      ['server', '--data-dir', this.dataDir, '--listen', '127.0.0.1:0', '--process-server-port', '0', '--compute', 'qemu', '--json'],
      this.env,
    );
    this.server.child.stderr?.on('data', (d: Buffer) => (this.serverLog = (this.serverLog + d.toString()).slice(-40_000)));
    this.ok(['login', '--server', this.url, '--token', String(this.server.json.adminToken)]);
    writeFileSync(this.passFile, 'e2e-Recovery-passphrase-1\n', { mode: 0o600 });
    this.ok(['vault', 'create', 'west', '--location', 'west', '--store', this.store, '--passphrase-file', this.passFile]);
    const keyFile = join(this.dir, 'reg.key');
    this.ok(['registration-key', 'create', '--vault', 'west', '--out', keyFile]);
    this.ok(['config-server', 'register', '--key', keyFile, '--name', 'cs-1', '--address', '127.0.0.1', '--credential-out', join(this.dir, 'cs.cred'), '--server', this.url]);
    this.ok(['policy', 'create', '--vault', 'west', 'seconds', '--rpo-threshold', '30s', '--retention', '24h', '--app-consistent', 'off', '--crash-consistent', '2s']);

    // The primary runs and writes before it is protected.
    await this.primary.start();
    await this.primary.waitForAck(3);
    const p = this.protect('web-1', { disks: this.primary.agentDisks(), machine: this.primary.machineCommands }, join(this.dir, 'primary'));
    this.itemId = p.itemId;
    this.agent = this.startAgent(p.config, p.stateDir);
    await this.until('web-1 protected (initial replication done)', () => (this.item().state === 'protected' ? true : undefined), 300_000);
  }

  get url(): string {
    return String(this.server?.json.url);
  }

  /** Ends every process this world started and removes its directory. Idempotent. */
  async close(): Promise<void> {
    for (const a of this.agents) await stopChild(a.child, 30_000).catch(() => undefined);
    await this.primary?.dispose().catch(() => undefined);
    if (this.server) await stopChild(this.server.child, 30_000);
    // Nothing may outlive the test: any QEMU started for it (recovered machines included) is killed.
    for (const pid of qemuProcesses(this.dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  cli(args: string[]): CliResult {
    return lifeboat(args, this.env);
  }

  ok(args: string[]): CliResult {
    const r = this.cli(args);
    assert.equal(r.status, 0, `lifeboat ${args.join(' ')} exited ${r.status}:\n${r.stderr}\n${r.stdout}`);
    return r;
  }

  okJson<T>(args: string[]): T {
    return JSON.parse(this.ok([...args, '--json']).stdout) as T;
  }

  /** Runs a CLI command without blocking the event loop (the console tailer keeps stamping ACKs meanwhile). */
  cliAsync(args: string[]): Promise<CliResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...this.env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr, json: () => JSON.parse(stdout) as Record<string, unknown> }));
    });
  }

  /** Waits for a job to end; it must have succeeded. */
  async watch(jobId: string): Promise<Job> {
    const r = await this.cliAsync(['job', 'watch', jobId, '--json']);
    assert.equal(r.status, 0, `job ${jobId} did not succeed:\n${r.stderr}\n${r.stdout}\n${this.diag()}`);
    return JSON.parse(r.stdout) as Job;
  }

  item(id = this.itemId): { state: string; generation?: number; rpoSeconds: number | null } {
    return this.okJson(['item', 'show', id]);
  }

  /** The points of the item's disk `name` (root or data), oldest first. */
  points(name: string, itemId = this.itemId): PointRow[] {
    return this.okJson<PointRow[]>(['point', 'list', '--disk', `${itemId}.${name}`, '--store', this.store, '--passphrase-file', this.passFile]);
  }

  /** Restores a point of the store into a raw image file. */
  restore(pointId: string, name: string): string {
    const image = join(this.dir, `${name}.raw`);
    this.ok(['disk', 'restore', pointId, '--to', image, '--store', this.store, '--passphrase-file', this.passFile]);
    return image;
  }

  /** The item's newest drill report (test failovers and failovers have one each). */
  report(itemId = this.itemId): DrillReport {
    return this.okJson<DrillReport>(['drill', 'report', itemId]);
  }

  /** The console of a machine the compute driver runs (console.log in its state directory). */
  machineConsole(machineId: string): string {
    const file = pathsNamed(this.dataDir, machineId)
      .map((p) => join(p, 'console.log'))
      .find((p) => existsSync(p));
    return file === undefined ? '' : readFileSync(file, 'latin1');
  }

  /** What the records workload of a recovered machine did since its last boot: the record it resumed after, its last ACK. */
  machineRecords(machineId: string): { resumedAfter: number; lastAck: number } | undefined {
    const text = this.machineConsole(machineId);
    const boots = [...text.matchAll(/lifeboat-records: resuming after record (\d+)/g)];
    const lastBoot = boots[boots.length - 1];
    if (!lastBoot || lastBoot.index === undefined) return undefined;
    const acks = acksIn(text.slice(lastBoot.index));
    const resumedAfter = Number(lastBoot[1]);
    return { resumedAfter, lastAck: acks.length === 0 ? resumedAfter : (acks[acks.length - 1] as number) };
  }

  startAgent(config: string, stateDir: string): AgentProcess {
    let log = '';
    const child = spawn(process.execPath, [BIN, 'agent', 'run', '--config', config, '--state-dir', stateDir, '--json'], {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer) => (log = (log + d.toString()).slice(-40_000));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const a = { child, log: () => log };
    this.agents.push(a);
    return a;
  }

  async stopAgent(a: AgentProcess): Promise<void> {
    await stopChild(a.child, 30_000);
  }

  /** Adds machine `name`, enables its replication and enrolls an agent with `agentJson` (not started). */
  protect(name: string, agentJson: object, dir: string): { itemId: string; config: string; stateDir: string } {
    this.ok(['machine', 'add', '--config-server', 'cs-1', name, '--ip', '127.0.0.1', '--os', 'debian-12']);
    const enabled = this.okJson<{ items: { id: string }[] }>(['replication', 'enable', '--vault', 'west', '--policy', 'seconds', '--config-server', 'cs-1', '--manual-install', name]);
    const id = (enabled.items[0] as { id: string }).id;
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify(agentJson, null, 2));
    const stateDir = join(dir, 'agent-state');
    const tokenFile = join(dir, 'enroll.token');
    writeFileSync(tokenFile, `${String(this.okJson<{ token: string }>(['item', 'enroll-token', id]).token)}\n`, { mode: 0o600 });
    this.ok(['agent', 'enroll', '--vault', this.url, '--item', id, '--token-file', tokenFile, '--config', config, '--state-dir', stateDir]);
    return { itemId: id, config, stateDir };
  }

  /** Polls `probe` until it returns a value; fails at once when an agent died, and with the diagnostics on time-out. */
  async until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number, detail?: () => string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      for (const a of this.agents) {
        if (a.child.exitCode !== null && a.child.exitCode !== 0) assert.fail(`an agent exited with ${a.child.exitCode} while waiting for ${what}:\n${a.log().slice(-3000)}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${detail ? detail() : this.diag()}`);
      await sleep(500);
    }
  }

  diag(): string {
    return `--- primary console ---\n${this.primary?.consoleTail(1500) ?? ''}\n--- agent ---\n${this.agent?.log().slice(-3000) ?? ''}\n--- server ---\n${this.serverLog.slice(-4000)}`;
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child is gone. */
function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
