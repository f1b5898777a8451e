/**
 * The replica processor over a real fs store (docs/replication.md, "Replica
 * processor"): segments written as the process server writes them become points
 * (whole cuts, app-consistent cuts alone), retention prunes, the RPO follows a fake
 * clock, the RPO alert is raised and cleared, a journal gap is an alert and not a
 * crash, and initial replication ends with "Finalize protection".
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../../../src/format/segment.js';
import { writeSegment } from '../../../src/store/journal.js';
import { PointReader } from '../../../src/store/point-reader.js';
import type { Repository } from '../../../src/store/repository.js';
import { AlertEvaluator } from '../../../src/vault/services/alert-evaluator.js';
import { startVaultServer, type VaultServer } from '../../../src/vault/server.js';
import { makeTempDir } from '../../helpers/env.js';
import { TEST_SCRYPT } from '../../helpers/store.js';
import { waitFor } from '../replication/harness.js';

const DISK_BYTES = 64 * 1024;
const T0 = Date.parse('2026-11-20T10:00:00Z');

describe('replica processor', () => {
  const tmp = makeTempDir('replica');
  let t = T0;
  const now = () => new Date(t);
  let server: VaultServer;
  let repo: Repository;
  let itemId: string;
  let disk: string;
  let alerts: AlertEvaluator;
  let sequence = 0;

  const segment = (flags: number, capturedAtMs: number, fill: number, offset = 0) =>
    writeSegment(repo, disk, {
      flags,
      generation: 1,
      sequence: ++sequence,
      diskSizeBytes: DISK_BYTES,
      createdAtMs: capturedAtMs,
      extents: [{ offset, data: Buffer.alloc(4096, fill) }],
    });

  before(async () => {
    server = await startVaultServer({
      dataDir: join(tmp.path, 'vault'),
      host: '127.0.0.1',
      port: 0,
      now,
      storeScrypt: TEST_SCRYPT,
      replica: { enabled: false },
      alertIntervalMs: 3_600_000,
      jobs: { pollIntervalMs: 20 },
    });
    const token = server.initialAdminToken as string;
    const res = await fetch(`${server.url}/api/v1/vaults`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'west', location: 'west', storeUrl: `file://${join(tmp.path, 'store')}`, storePassphrase: 'store-canary-Pass-91ab' }),
    });
    const vault = (await res.json()) as { id: string; storeRecoveryKey?: string };
    assert.equal(res.status, 201);
    assert.match(String(vault.storeRecoveryKey), /.+/, 'the vault created the store and shows its recovery key once');
    const repos = server.repos;
    const cs = await repos.configServers.create({ vaultId: vault.id, name: 'cs', address: '10.0.0.1', version: '0.1.0' });
    const machine = await repos.machines.create({ configServerId: cs.id, name: 'web', privateIp: '10.0.0.9', os: 'debian-12', supported: true });
    const policy = await repos.policies.create({
      vaultId: vault.id,
      name: 'gold',
      rpoThresholdSeconds: 60,
      retentionHours: 1,
      appConsistentFrequencyMinutes: 60,
      crashConsistentFrequencySeconds: 30,
    });
    const item = await repos.items.create({
      vaultId: vault.id,
      machineId: machine.id,
      policyId: policy.id,
      state: 'initial-replication',
      compute: { targetName: 'web', size: 'small', network: null, subnet: null, ip: null },
      disks: [{ name: 'sda', sizeBytes: DISK_BYTES }],
    });
    itemId = item.id;
    disk = `${item.id}.sda`;
    await repos.agents.enroll({
      itemId,
      machineId: machine.id,
      hostname: 'web',
      certificateSerial: '1a2b',
      certificateNotAfter: new Date(T0 + 365 * 86400000).toISOString(),
      disks: [{ name: 'sda', sizeBytes: DISK_BYTES, state: 'initial', initialPercent: 0, ackedSequence: 0, lagMs: 0, lastError: null }],
      credentialHash: 'x'.repeat(64),
    });
    repo = await server.stores.openVaultStore(vault.id);
    assert.equal(await server.stores.openVaultStore(vault.id), repo, 'the store is opened once');
    alerts = new AlertEvaluator({ repos, now, journalGaps: () => server.replica.journalGaps() });
  });
  after(async () => {
    await server.close();
    tmp.cleanup();
  });

  it('no point yet: RPO unknown, the item stays in initial replication', async () => {
    const out = await server.replica.processNow(itemId);
    assert.equal(out.rpoSeconds, null);
    assert.equal(out.protectedNow, false);
    assert.equal((await server.repos.items.get(itemId)).state, 'initial-replication');
  });

  it('a whole cut becomes a point; the item is protected and "Finalize protection" succeeds', async () => {
    await segment(SEGMENT_PARTIAL, T0, 1); // a cut of two segments: no point until its end
    let out = await server.replica.processNow(itemId);
    assert.equal(out.disks[0]?.pointsMade, 0);
    await segment(SEGMENT_CONTINUES, T0, 2, 4096);
    t = T0 + 5000;
    out = await server.replica.processNow(itemId);
    assert.equal(out.disks[0]?.pointsMade, 1);
    assert.equal(out.rpoSeconds, 5);
    assert.equal(out.protectedNow, true);
    const item = await server.repos.items.get(itemId);
    assert.equal(item.state, 'protected');
    assert.equal(item.rpoSeconds, 5);
    assert.equal(item.initialReplicationPercent, 100);
    const job = await waitFor('the finalize job to end', async () => {
      const [j] = await server.repos.jobs.list({ itemId });
      return j && (j.state === 'succeeded' || j.state === 'failed') ? j : undefined;
    });
    assert.equal(job.kind, 'finalize-protection');
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
  });

  it('an abandoned cut is never applied; a point ends at an app-consistent cut and is marked app', async () => {
    await segment(SEGMENT_PARTIAL, T0 + 10_000, 3); // abandoned: the next cut begins without CONTINUES
    await segment(0, T0 + 20_000, 4);
    await segment(SEGMENT_APP_CONSISTENT, T0 + 30_000, 5, 8192);
    await segment(0, T0 + 40_000, 6, 12288);
    t = T0 + 45_000;
    const out = await server.replica.processNow(itemId);
    // processJournal stops at the end of the first app-consistent cut: the crash cut before it is folded into that point.
    assert.equal(out.disks[0]?.pointsMade, 2);
    const points = await repo.listPoints(disk);
    assert.deepEqual(points.map((p) => p.consistency), ['crash', 'app', 'crash']);
    assert.deepEqual(points.map((p) => p.capturedAt), [T0, T0 + 30_000, T0 + 40_000].map((ms) => new Date(ms).toISOString()));
    // The abandoned cut's bytes (0x03 at offset 0) are nowhere: offset 0 went from 0x01 straight to 0x04.
    const reader = await PointReader.open(repo, points[1]!, { workers: 0 });
    assert.equal((await reader.read(0, 1))[0], 4);
    assert.equal((await reader.read(8192, 1))[0], 5);
    assert.equal(out.rpoSeconds, 5);
  });

  it('the RPO grows with the clock; the RPO alert is raised, then cleared by a fresh point', async () => {
    t = T0 + 40_000 + 150_000; // 150 s behind: beyond 2 x the 60 s threshold
    assert.equal((await server.replica.processNow(itemId)).rpoSeconds, 150);
    await alerts.evaluateOnce();
    const [open] = await server.repos.alerts.list({ open: true, kind: 'rpo-threshold-exceeded', subjectId: itemId });
    assert.equal(open?.severity, 'critical');
    await segment(0, t - 2000, 7);
    assert.equal((await server.replica.processNow(itemId)).rpoSeconds, 2);
    await alerts.evaluateOnce();
    assert.equal((await server.repos.alerts.list({ open: true, kind: 'rpo-threshold-exceeded', subjectId: itemId })).length, 0);
    // Between runs (the policy's 30 s have not passed) the stored RPO still follows the clock.
    t += 10_000;
    await server.replica.tick();
    assert.equal((await server.repos.items.get(itemId)).rpoSeconds, 12);
  });

  it('retention: points older than retentionHours go, except the newest and the newest app-consistent one', async () => {
    t = T0 + 2 * 3600_000;
    await segment(0, t - 1000, 8);
    const out = await server.replica.processNow(itemId);
    assert.equal(out.disks[0]?.pointsPruned, 3, JSON.stringify(out.disks));
    const points = await repo.listPoints(disk);
    assert.deepEqual(points.map((p) => [p.consistency, p.capturedAt]), [
      ['app', new Date(T0 + 30_000).toISOString()],
      ['crash', new Date(t - 1000).toISOString()],
    ]);
  });

  it('a journal gap stops that disk with an alert, never the processor', async () => {
    sequence++; // a segment lost in between
    await segment(0, t, 9);
    const out = await server.replica.processNow(itemId);
    assert.match(String(out.disks[0]?.error), /^JOURNAL_GAP: /);
    assert.deepEqual(server.replica.journalGaps().map((g) => g.subjectId), [itemId]);
    await alerts.evaluateOnce();
    assert.equal((await server.repos.alerts.list({ open: true, kind: 'journal-gap', subjectId: itemId })).length, 1);
    // Two hours without a heartbeat from the item's agent: it is lost.
    const agent = await server.repos.agents.findByItem(itemId);
    const [lost] = await server.repos.alerts.list({ open: true, kind: 'heartbeat-lost', subjectId: agent!.id });
    assert.match(String(lost?.message), /the agent of web/);
    await server.replica.tick(); // the loop carries on
  });
});
