/**
 * A vault (startVaultServer, SQLite, real fs store) with the fake compute driver and a
 * protected item of two disks whose recovery points are made the way replication makes
 * them: journal segments written into the store, processed by the replica processor.
 */
import { join } from 'node:path';
import { FakeComputeDriver, type FakeComputeOptions } from '../../../src/compute/fake.js';
import type { Job, ReplicatedItem } from '../../../src/core/model.js';
import type { PointManifest } from '../../../src/format/manifest.js';
import { writeSegment } from '../../../src/store/journal.js';
import type { Repository } from '../../../src/store/repository.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import { startVaultServer, type VaultServer } from '../../../src/vault/server.js';
import { makeTempDir } from '../../helpers/env.js';
import { TEST_SCRYPT } from '../../helpers/store.js';
import { client, offsetClock, waitFor, type Call } from '../replication/harness.js';

export const DISK_BYTES = 64 * 1024;
export const DISKS = ['sda', 'sdb'] as const;

export interface RecoveryVault {
  server: VaultServer;
  fake: FakeComputeDriver;
  token: string;
  clock: ReturnType<typeof offsetClock>;
  repo: Repository;
  item: ReplicatedItem;
  dataDir: string;
  tmpDir: string;
  call(method: string, path: string, body?: unknown): Promise<Call>;
  /** One cut of `disk` captured at `capturedAtMs` whose first 4 KiB are `fill`, processed into a point (returned). */
  point(disk: (typeof DISKS)[number], capturedAtMs: number, fill: number): Promise<PointManifest>;
  /** The same cut on every disk: one point per disk. */
  pointsAt(capturedAtMs: number, fill: number): Promise<PointManifest[]>;
  /** Writes a cut without processing it (pending at the process server's store). */
  pendingCut(disk: (typeof DISKS)[number], capturedAtMs: number, fill: number, flags?: number): Promise<void>;
  /** Closes the vault and starts it again on the same data directory and compute driver. */
  restart(): Promise<void>;
  waitJob(id: string, timeoutMs?: number): Promise<Job>;
  stop(): Promise<void>;
}

export async function startRecoveryVault(prefix: string, fakeOptions: FakeComputeOptions | FakeComputeDriver = {}, retentionHours = 24): Promise<RecoveryVault> {
  const tmp = makeTempDir(prefix);
  const dataDir = join(tmp.path, 'vault');
  const clock = offsetClock();
  const fake = fakeOptions instanceof FakeComputeDriver ? fakeOptions : new FakeComputeDriver(fakeOptions);
  const open = () =>
    startVaultServer({
      dataDir,
      host: '127.0.0.1',
      port: 0,
      now: clock.now,
      storeScrypt: TEST_SCRYPT,
      replica: { enabled: false },
      alertIntervalMs: 3_600_000,
      jobs: { pollIntervalMs: 20 },
      compute: fake,
      logger: createVaultLogger({ destination: { write: () => undefined } }),
    });
  let server = await open();
  const token = server.initialAdminToken as string;
  const call = (method: string, path: string, body?: unknown) => client(server.url).call(method, path, token, body);
  const vault = await call('POST', '/api/v1/vaults', {
    name: 'west',
    location: 'west',
    storeUrl: `file://${join(tmp.path, 'store')}`,
    storePassphrase: 'recovery-store-Passphrase-77',
  });
  if (vault.status !== 201) throw new Error(vault.text);
  const vaultId = String(vault.json.id);
  const repos = server.repos;
  const cs = await repos.configServers.create({ vaultId, name: 'cs', address: '10.0.0.1', version: '0.1.0' });
  const machine = await repos.machines.create({ configServerId: cs.id, name: 'web', privateIp: '10.0.0.9', os: 'debian-12', supported: true });
  const policy = await repos.policies.create({
    vaultId,
    name: 'gold',
    rpoThresholdSeconds: 600,
    retentionHours,
    appConsistentFrequencyMinutes: 60,
    crashConsistentFrequencySeconds: 30,
  });
  const item = await repos.items.create({
    vaultId,
    machineId: machine.id,
    policyId: policy.id,
    state: 'protected',
    compute: { targetName: 'web', size: 'small', network: null, subnet: null, ip: null },
    disks: DISKS.map((name) => ({ name, sizeBytes: DISK_BYTES })),
  });
  const repo = await server.stores.openVaultStore(vaultId);
  const sequence = new Map<string, number>();
  const pendingCut = async (disk: string, capturedAtMs: number, fill: number, flags = 0): Promise<void> => {
    const storeDisk = `${item.id}.${disk}`;
    const seq = (sequence.get(storeDisk) ?? 0) + 1;
    sequence.set(storeDisk, seq);
    await writeSegment(repo, storeDisk, { flags, generation: 1, sequence: seq, diskSizeBytes: DISK_BYTES, createdAtMs: capturedAtMs, extents: [{ offset: 0, data: Buffer.alloc(4096, fill) }] });
  };
  const v: RecoveryVault = {
    get server() {
      return server;
    },
    fake,
    token,
    clock,
    repo,
    item,
    dataDir,
    tmpDir: tmp.path,
    call,
    pendingCut,
    async point(disk, capturedAtMs, fill) {
      await pendingCut(disk, capturedAtMs, fill);
      await server.replica.processNow(item.id);
      const newest = await repo.latestPoint(`${item.id}.${disk}`);
      if (!newest) throw new Error('no point made');
      return newest;
    },
    async pointsAt(capturedAtMs, fill) {
      for (const d of DISKS) await pendingCut(d, capturedAtMs, fill);
      await server.replica.processNow(item.id);
      return Promise.all(DISKS.map(async (d) => (await repo.latestPoint(`${item.id}.${d}`)) as PointManifest));
    },
    async restart() {
      await server.close();
      server = await open();
    },
    waitJob: (id, timeoutMs = 20_000) =>
      waitFor(
        `job ${id} to end`,
        async () => {
          const job = await server.repos.jobs.get(id);
          return ['succeeded', 'failed', 'cancelled'].includes(job.state) ? job : undefined;
        },
        timeoutMs,
      ),
    async stop() {
      await server.close();
      tmp.cleanup();
    },
  };
  return v;
}

/** The fake's boot line shows the first bytes of the first disk: which point booted. */
export function bootBytes(fill: number): string {
  return Buffer.alloc(16, fill).toString('hex');
}
