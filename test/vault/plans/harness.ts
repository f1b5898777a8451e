/**
 * A real vault (startVaultServer, SQLite, port 0, FakeComputeDriver) whose item
 * operations are a small in-test RecoveryOperations: it keeps the contract of
 * src/vault/recovery/module.ts (state checks and changes, one job per operation,
 * a drill report per test failover) and runs its jobs itself, each for
 * `jobMs`, passing or failing as told. It records when each item job started
 * and ended, so tests can check the order a plan ran in.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeComputeDriver } from '../../../src/compute/fake.js';
import { LifeboatError } from '../../../src/core/errors.js';
import { JOB_KINDS, completeStep, failStep, startJob } from '../../../src/core/jobs.js';
import type { DrillReport, Job, JobKind, ReplicatedItem } from '../../../src/core/model.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import { persistJob, ENDED_JOB_STATES } from '../../../src/vault/jobs/job-store.js';
import type { RecoveryDeps, RecoveryOperations, TestFailoverInput } from '../../../src/vault/recovery/module.js';
import { startVaultServer, type VaultServer } from '../../../src/vault/server.js';
import { makeTempDir } from '../../helpers/env.js';
import { TEST_SCRYPT } from '../../helpers/store.js';

export type Behaviour = 'pass' | 'fail-job' | 'fail-report' | 'refuse';

export interface OpEvent {
  readonly what: 'start' | 'end' | 'ack';
  readonly kind?: JobKind;
  readonly itemId?: string;
  readonly jobId?: string;
}

/** Shared by the fakes of every start of one test's vault (a restart makes a new fake). */
export interface FakeWorld {
  readonly events: OpEvent[];
  /** Per item and operation; default 'pass'. */
  readonly behaviour: Map<string, Behaviour>;
  jobMs: number;
  readonly calls: { op: string; itemId: string; input: unknown }[];
}

export function newWorld(): FakeWorld {
  return { events: [], behaviour: new Map(), jobMs: 150, calls: [] };
}

const behaviourKey = (kind: JobKind, itemId: string): string => `${kind}:${itemId}`;

export class FakeRecovery implements RecoveryOperations {
  private closed = false;

  constructor(
    private readonly deps: RecoveryDeps,
    private readonly world: FakeWorld,
  ) {}

  close(): void {
    this.closed = true;
  }

  async startTestFailover(itemId: string, input: TestFailoverInput): Promise<{ job: Job; report: DrillReport }> {
    this.world.calls.push({ op: 'test-failover', itemId, input });
    const item = await this.move(itemId, 'protected', 'test-failover', 'test-failover');
    const job = await this.startJob('test-failover', item, input.initiator);
    const report = await this.deps.repos.drillReports.create({
      itemId,
      planId: input.planId ?? null,
      operation: 'test-failover',
      trigger: input.trigger ?? 'operator',
      jobId: job.id,
      cleanupJobId: null,
      outcome: 'running',
      point: null,
      rpoSeconds: null,
      rtoSeconds: null,
      driver: this.deps.compute.name,
      network: 'isolated',
      machineId: `test-${itemId}`,
      accel: null,
      probes: [],
      consoleLog: '',
      error: null,
      notes: null,
      startedAt: this.deps.now().toISOString(),
      endedAt: null,
    });
    return { job, report };
  }

  async cleanupTestFailover(itemId: string, input: { notes: string | null; initiator: string }): Promise<Job> {
    this.world.calls.push({ op: 'cleanup-test-failover', itemId, input });
    const item = await this.move(itemId, 'test-failover', 'test-failover-cleanup', 'cleanup-test-failover');
    return this.startJob('cleanup-test-failover', item, input.initiator, async () => {
      await this.deps.repos.items.updateState(itemId, 'test-failover-cleanup', 'protected');
      const reports = await this.deps.repos.drillReports.listByItem(itemId, 1);
      if (reports[0]) await this.deps.repos.drillReports.update(reports[0].id, { notes: input.notes, endedAt: this.deps.now().toISOString() });
    });
  }

  async startFailover(itemId: string, input: { point: unknown; shutdownSource: boolean; initiator: string; planId?: string | null }): Promise<Job> {
    this.world.calls.push({ op: 'failover', itemId, input });
    const item = await this.deps.repos.items.get(itemId);
    if (item.state !== 'protected' && item.state !== 'test-failover') throw new LifeboatError('ILLEGAL_TRANSITION', `item ${itemId} is ${item.state}`);
    await this.move(itemId, item.state, 'failing-over', 'failover');
    return this.startJob('failover', item, input.initiator, async () => {
      await this.deps.repos.items.updateState(itemId, 'failing-over', 'failed-over');
    });
  }

  changeRecoveryPoint(): Promise<Job> {
    throw new LifeboatError('UNSUPPORTED', 'not in this fake');
  }

  commit(): Promise<Job> {
    throw new LifeboatError('UNSUPPORTED', 'not in this fake');
  }

  choosePoint(): never {
    throw new LifeboatError('UNSUPPORTED', 'not in this fake');
  }

  async waitForJob(jobId: string, signal?: AbortSignal): Promise<Job> {
    for (;;) {
      if (signal?.aborted) throw new LifeboatError('JOB_FAILED', 'aborted');
      const job = await this.deps.repos.jobs.get(jobId);
      if (ENDED_JOB_STATES.includes(job.state)) return job;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private async move(itemId: string, from: ReplicatedItem['state'], to: ReplicatedItem['state'], kind: JobKind): Promise<ReplicatedItem> {
    if (this.world.behaviour.get(behaviourKey(kind, itemId)) === 'refuse') throw new LifeboatError('COMPUTE_UNAVAILABLE', `fake: ${kind} of ${itemId} refused as told`);
    const item = await this.deps.repos.items.get(itemId);
    if (item.state !== from || !(await this.deps.repos.items.updateState(itemId, from, to))) {
      throw new LifeboatError('ILLEGAL_TRANSITION', `item ${itemId} is ${item.state}, not ${from}`);
    }
    return item;
  }

  /** Creates the job already running (the vault's runner only takes queued jobs) and runs it here. */
  private async startJob(kind: JobKind, item: ReplicatedItem, initiator: string, onSuccess?: () => Promise<void>): Promise<Job> {
    const { repos, now } = this.deps;
    const job = await repos.db.transaction(async () => {
      const queued = await repos.jobs.create({ kind, itemId: item.id, initiator, steps: JOB_KINDS[kind].steps.map((st) => st.name) });
      const started = startJob(queued, now());
      await persistJob(repos, queued, started);
      return started;
    });
    this.world.events.push({ what: 'start', kind, itemId: item.id, jobId: job.id });
    const behaviour = this.world.behaviour.get(behaviourKey(kind, item.id)) ?? 'pass';
    setTimeout(() => {
      void (async () => {
        if (this.closed) return;
        let current = await repos.jobs.get(job.id);
        if (behaviour === 'fail-job') {
          current = failStep(current, `fake: ${kind} of ${item.id} fails as told`, now());
          await persistJob(repos, await repos.jobs.get(job.id), current);
        } else {
          while (current.state === 'running') {
            const next = completeStep(current, now());
            await persistJob(repos, current, next);
            current = next;
          }
          await onSuccess?.();
        }
        if (kind === 'test-failover') {
          const report = await repos.drillReports.findByJob(job.id);
          if (report) {
            const failed = behaviour !== 'pass';
            await repos.drillReports.update(report.id, { outcome: failed ? 'failed' : 'passed', error: failed ? 'fake: the probe port 22 did not answer' : null });
          }
        }
        this.world.events.push({ what: 'end', kind, itemId: item.id, jobId: job.id });
      })().catch(() => undefined); // the vault closed under it
    }, this.world.jobMs).unref();
    return job;
  }
}

export interface PlansVault {
  server: VaultServer;
  dataDir: string;
  token: string;
  world: FakeWorld;
  vaultId: string;
  scriptsDir: string;
  /** A scratch directory outside the data directory (removed by stop). */
  tmpDirOf(): string;
  call(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown>; text: string }>;
  /** A protected item of the vault. */
  item(name: string): Promise<ReplicatedItem>;
  /** Writes an executable script into the scripts directory. */
  script(name: string, body: string): string;
  waitJob(jobId: string, until?: (job: Job) => boolean, timeoutMs?: number): Promise<Job>;
  /** Closes and starts the vault again on the same data directory (a new fake, the same world). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startPlansVault(prefix: string, options: { drillIntervalMs?: number } = {}): Promise<PlansVault> {
  const tmp = makeTempDir(prefix);
  const dataDir = join(tmp.path, 'data');
  const scriptsDir = join(dataDir, 'scripts');
  const world = newWorld();
  let fake: FakeRecovery | undefined;
  const start = (): Promise<VaultServer> =>
    startVaultServer({
      dataDir,
      host: '127.0.0.1',
      port: 0,
      logger: createVaultLogger({ level: 'silent' }),
      jobs: { pollIntervalMs: 20, eventsPollMs: 50 },
      storeScrypt: TEST_SCRYPT,
      replica: { enabled: false },
      compute: new FakeComputeDriver(),
      plans: {
        drillIntervalMs: options.drillIntervalMs ?? 3_600_000,
        operations: (deps) => (fake = new FakeRecovery(deps, world)),
      },
    });
  let server = await start();
  const token = server.initialAdminToken!;
  mkdirSync(scriptsDir, { recursive: true });
  const vault = await server.repos.vaults.create({ name: 'west', location: 'west', storeUrl: `file://${join(tmp.path, 'store')}` });
  const cs = await server.repos.configServers.create({ vaultId: vault.id, name: 'cs', address: '10.0.0.5', version: '0.1.0' });
  const policy = await server.repos.policies.create({ vaultId: vault.id, name: 'p', rpoThresholdSeconds: 60, retentionHours: 24, appConsistentFrequencyMinutes: 60, crashConsistentFrequencySeconds: 30 });
  const v: PlansVault = {
    get server() {
      return server;
    },
    dataDir,
    token,
    world,
    vaultId: vault.id,
    scriptsDir,
    tmpDirOf: () => tmp.path,
    async call(method, path, body, as = token) {
      const res = await fetch(server.url + path, {
        method,
        headers: { authorization: `Bearer ${as}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
    },
    async item(name) {
      const machine = await server.repos.machines.create({ configServerId: cs.id, name, privateIp: '10.0.0.7', os: 'debian-12', supported: true, supportReason: null });
      return server.repos.items.create({
        vaultId: vault.id,
        machineId: machine.id,
        policyId: policy.id,
        state: 'protected',
        compute: { targetName: name, size: 'small', network: null, subnet: null, ip: null },
        disks: [],
      });
    },
    script(name, body) {
      const path = join(scriptsDir, name);
      writeFileSync(path, body);
      chmodSync(path, 0o755);
      return path;
    },
    async waitJob(jobId, until = (j) => ENDED_JOB_STATES.includes(j.state), timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const job = await server.repos.jobs.get(jobId);
        if (until(job)) return job;
        if (Date.now() > deadline) throw new Error(`job ${jobId} never reached the awaited state: ${JSON.stringify(job, null, 1)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async restart() {
      fake?.close();
      await server.close();
      server = await start();
    },
    async stop() {
      fake?.close();
      try {
        await server.close();
      } finally {
        tmp.cleanup();
      }
    },
  };
  return v;
}
