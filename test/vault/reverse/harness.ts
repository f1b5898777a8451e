/**
 * A rig for reprotect and failback with the real parts: the vault (API, jobs, store,
 * replica processor, reverse module) on a fixed loopback port so it can restart where
 * the agent looks, a process server whose backend is the vault, the fake compute
 * driver with change tracking (its machines' disks live in memory and outlive a vault
 * restart, as a QEMU machine would), and the real agent over an image file with the
 * scan tracker, enrolled with a one-time token. A gate in front of the agent's vault
 * client can hold its reverse batches (the queue then stays full) for restart tests.
 */
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, type AgentEvent } from '../../../src/agent/agent.js';
import { parseAgentFileConfig } from '../../../src/agent/config.js';
import { enroll } from '../../../src/agent/enroll.js';
import { replicationTransport } from '../../../src/agent/replication-transport.js';
import { StateDir } from '../../../src/agent/state.js';
import { registryTrackers } from '../../../src/agent/trackers.js';
import { HttpVaultClient, type ReverseBatch, type VaultClient } from '../../../src/agent/vault-client.js';
import { FakeComputeDriver } from '../../../src/compute/fake.js';
import type { Job, ReplicatedItem } from '../../../src/core/model.js';
import { startProcessServer, type ProcessServer } from '../../../src/process-server/server.js';
import { PointReader } from '../../../src/store/point-reader.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import { startVaultServer, type VaultServer } from '../../../src/vault/server.js';
import { freePort, makeTempDir } from '../../helpers/env.js';
import { TEST_SCRYPT } from '../../helpers/store.js';
import { seedItem } from '../../helpers/item.js';

export const MiB = 2 ** 20;
export const BLOCK = 64 * 1024;

export function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

export async function waitUntil<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) {
      if (process.env.LIFEBOAT_TEST_DEBUG) process.stderr.write(`timed out waiting for ${what}\n`);
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The agent's vault client, whose reverse batches can be held (answered empty). */
export class GatedVault implements VaultClient {
  hold = false;
  constructor(private readonly inner: HttpVaultClient) {}
  enroll: VaultClient['enroll'] = (r) => this.inner.enroll(r);
  heartbeat: VaultClient['heartbeat'] = (c, r) => this.inner.heartbeat(c, r);
  reverseDigests: NonNullable<VaultClient['reverseDigests']> = (c, p) => this.inner.reverseDigests(c, p);
  reverseAck: NonNullable<VaultClient['reverseAck']> = (c, a) => this.inner.reverseAck(c, a);
  reverseBatch = async (c: string, r: { session: string; maxBytes: number }): Promise<ReverseBatch> =>
    this.hold ? { session: r.session, blocks: [] } : this.inner.reverseBatch(c, r);
}

export class ReverseRig {
  readonly tmp = makeTempDir('reverse');
  readonly compute = new FakeComputeDriver({ changeTracking: true });
  readonly image = join(this.tmp.path, 'disk.img');
  readonly marks = join(this.tmp.path, 'machine-commands.log');
  readonly events: AgentEvent[] = [];
  readonly logLines: string[] = [];
  vault!: VaultServer;
  ps!: ProcessServer;
  ownerToken!: string;
  item!: ReplicatedItem;
  agent!: Agent;
  gate!: GatedVault;
  private apiPort = 0;
  private psPort = 0;
  private stopAgent = new AbortController();
  private agentRun: Promise<void> | undefined;

  constructor(readonly sizeBytes = 8 * MiB) {}

  get machineId(): string {
    return `failover-${this.item.id.toLowerCase()}`;
  }

  async startVault(): Promise<void> {
    this.apiPort ||= await freePort();
    this.psPort ||= await freePort();
    this.vault = await startVaultServer({
      dataDir: join(this.tmp.path, 'vault'),
      host: '127.0.0.1',
      port: this.apiPort,
      storeScrypt: TEST_SCRYPT,
      compute: this.compute,
      jobs: { pollIntervalMs: 20 },
      replica: { tickMs: 200 },
      logger: createVaultLogger({ level: 'info', destination: { write: (line: string) => void this.logLines.push(line) } }),
    });
    this.ownerToken ||= this.vault.initialAdminToken ?? '';
    this.ps = await startProcessServer({
      host: '127.0.0.1',
      port: this.psPort,
      tls: await this.vault.processServerTls(['127.0.0.1', 'localhost']),
      spoolDir: join(this.tmp.path, 'spool'),
      spoolLimitBytes: 256 * MiB,
      backend: this.vault.processServerBackend,
      workers: 1,
    });
    this.vault.setProcessServerEndpoint({ host: '127.0.0.1', port: this.psPort, serverName: 'localhost' });
  }

  async stopVault(): Promise<void> {
    await this.ps.close();
    await this.vault.close();
  }

  async api(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
    const res = await fetch(this.vault.url + path, {
      method,
      headers: { authorization: `Bearer ${this.ownerToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  /** A vault with a store, a protected item whose agent replicates an image file with some data. */
  async setUp(initial: (image: string) => void): Promise<void> {
    await this.startVault();
    writeFileSync(this.image, '');
    truncateSync(this.image, this.sizeBytes);
    initial(this.image);
    const vault = await this.api('POST', '/api/v1/vaults', { name: 'west', location: 'west', storeUrl: `file://${join(this.tmp.path, 'store')}`, storePassphrase: 'reverse-rig-Passphrase-93' });
    if (vault.status !== 201) throw new Error(vault.text);
    const vaultId = String(vault.json.id);
    const repos = this.vault.repos;
    const { item } = await seedItem(repos, vaultId);
    const token = String((await this.api('POST', `/api/v1/items/${item.id}/enrollment-token`, {})).json.token);
    const stateDir = join(this.tmp.path, 'agent');
    await enroll({ vaultUrl: this.vault.url, itemId: item.id, token, config: this.agentConfig(), stateDir, vault: new HttpVaultClient(this.vault.url) });
    this.item = await repos.items.get(item.id);
    this.startAgent();
  }

  agentConfig() {
    const log = (what: string) => ['sh', '-c', `echo ${what} >> ${this.marks}`];
    return parseAgentFileConfig({
      disks: [{ name: 'sda', tracker: { kind: 'scan', path: this.image } }],
      machine: { shutdownCommand: log('shutdown'), startCommand: log('start'), timeoutMs: 10_000 },
    });
  }

  startAgent(): void {
    const stateDir = join(this.tmp.path, 'agent');
    const state = new StateDir(stateDir);
    const identity = state.identity();
    this.gate = new GatedVault(new HttpVaultClient(identity.vaultUrl));
    this.stopAgent = new AbortController();
    this.agent = new Agent({
      stateDir,
      config: this.agentConfig(),
      vault: this.gate,
      connect: replicationTransport(identity),
      openTracker: registryTrackers(state),
      heartbeatIntervalMs: 200,
      maxBackoffMs: 500,
      reversePollMs: 100,
      reverseBatchBytes: 256 * 1024,
      version: '0.1.0',
      onEvent: (e) => this.events.push(e),
    });
    this.agentRun = this.agent.run(this.stopAgent.signal);
  }

  async stopAgentRun(): Promise<void> {
    this.stopAgent.abort();
    await this.agentRun;
  }

  async refreshItem(): Promise<ReplicatedItem> {
    this.item = await this.vault.repos.items.get(this.item.id);
    return this.item;
  }

  async job(path: string, body: unknown = {}): Promise<Job> {
    const res = await this.api('POST', path, body);
    if (res.status !== 202) throw new Error(`${path}: ${res.status} ${res.text}`);
    return res.json as unknown as Job;
  }

  async waitJob(id: string, timeoutMs = 120_000): Promise<Job> {
    return waitUntil(
      `job ${id} to end`,
      async () => {
        const job = await this.vault.repos.jobs.get(id);
        return ['succeeded', 'failed', 'cancelled'].includes(job.state) ? job : undefined;
      },
      timeoutMs,
    );
  }

  async newestPoint(): Promise<{ generation: number; data: Buffer } | undefined> {
    const repo = await this.vault.stores.openVaultStore(this.item.vaultId);
    const point = await repo.latestPoint(`${this.item.id}.sda`);
    if (!point) return undefined;
    const reader = await PointReader.open(repo, point, { workers: 0 });
    try {
      return { generation: point.source.generation, data: await reader.read(0, point.diskSizeBytes) };
    } finally {
      await reader.close();
    }
  }

  async replicaDisk(): Promise<Buffer> {
    const src = await this.compute.readDisk(this.machineId, 'sda');
    try {
      return await src.read(0, src.sizeBytes);
    } finally {
      await src.close();
    }
  }

  imageBytes(): Buffer {
    return readFileSync(this.image);
  }

  committedCuts(): Extract<AgentEvent, { event: 'cut-committed' }>[] {
    return this.events.filter((e): e is Extract<AgentEvent, { event: 'cut-committed' }> => e.event === 'cut-committed');
  }

  tail(): string {
    const agentTail = this.events.slice(-30).map((e) => JSON.stringify(e)).join('\n');
    return `agent events:\n${agentTail}\nvault log:\n${this.logLines.slice(-40).join('')}`;
  }

  async close(): Promise<void> {
    await this.stopAgentRun().catch(() => undefined);
    await this.stopVault().catch(() => undefined);
    this.tmp.cleanup();
  }
}
