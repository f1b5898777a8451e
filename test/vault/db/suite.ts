import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isLifeboatError, type ErrorCode } from '../../../src/core/errors.js';
import type { ComputeSettings } from '../../../src/core/model.js';
import { MIGRATIONS, SCHEMA_VERSION, migrate } from '../../../src/vault/db/migrations.js';
import { openDatabase } from '../../../src/vault/db/open.js';
import { createRepositories, type Repositories } from '../../../src/vault/db/repositories/index.js';

/**
 * The persistence suite every vault database driver must pass (SQLite and
 * PostgreSQL). `freshUrl` returns the URL of a new, empty database each call.
 */
export async function expectCode(promise: Promise<unknown>, code: ErrorCode, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isLifeboatError(err), `expected LifeboatError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

const COMPUTE: ComputeSettings = { targetName: 'web-1-dr', size: 'm4', network: 'recovery', subnet: '10.1.0.0/24', ip: '10.1.0.5' };
const TIB = 2 ** 40;

export function persistenceSuite(name: string, freshUrl: () => Promise<string>): void {
  /** A fresh migrated database with repositories on a controllable clock; closed afterwards. */
  const withRepos = (body: (r: Repositories, clock: { now: Date }) => Promise<void>) => async () => {
    const db = await openDatabase(await freshUrl());
    const clock = { now: new Date('2026-01-02T03:04:05.000Z') };
    try {
      await body(createRepositories(db, { now: () => clock.now }), clock);
    } finally {
      await db.close();
    }
  };

  /** A vault with a configuration server, process server, machine and policy. */
  async function fixture(r: Repositories) {
    const vault = await r.vaults.create({ name: 'dr', location: 'site-b', storeUrl: 'file:///srv/store' });
    const cs = await r.configServers.create({ vaultId: vault.id, name: 'cs1', address: '10.0.0.2', version: '0.1.0' });
    const ps = await r.processServers.create({ configServerId: cs.id, name: 'ps1', address: '10.0.0.2:9443', version: '0.1.0' });
    const machine = await r.machines.create({ configServerId: cs.id, name: 'web-1', privateIp: '10.0.0.10', os: 'debian-12' });
    const policy = await r.policies.create({
      vaultId: vault.id,
      name: 'default',
      rpoThresholdSeconds: 900,
      retentionHours: 72,
      appConsistentFrequencyMinutes: 60,
      crashConsistentFrequencySeconds: 300,
    });
    return { vault, cs, ps, machine, policy };
  }

  describe(`vault database: ${name}`, () => {
    describe('migrations', () => {
      it('apply from empty, record their ids, and are a no-op on reopen', async () => {
        const url = await freshUrl();
        const first = await openDatabase(url, { migrate: false });
        try {
          const result = await migrate(first);
          assert.deepEqual(result, { from: 0, to: SCHEMA_VERSION, applied: MIGRATIONS.map((m) => m.id) });
          const again = await migrate(first);
          assert.deepEqual(again, { from: SCHEMA_VERSION, to: SCHEMA_VERSION, applied: [] });
          await createRepositories(first).vaults.create({ name: 'kept', location: 'x', storeUrl: 'file:///s' });
        } finally {
          await first.close();
        }
        const reopened = await openDatabase(url);
        try {
          const rows = await reopened.query<{ id: number }>('SELECT id FROM schema_migrations ORDER BY id');
          assert.deepEqual(rows.map((r) => r.id), MIGRATIONS.map((m) => m.id));
          assert.deepEqual((await createRepositories(reopened).vaults.list()).map((v) => v.name), ['kept'], 'data survives reopening');
        } finally {
          await reopened.close();
        }
      });

      it('refuse a database whose schema is newer than the code, and leave it untouched', async () => {
        const url = await freshUrl();
        const db = await openDatabase(url);
        await db.run('INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)', [SCHEMA_VERSION + 1, 'from the future', 'x']);
        await db.close();
        await expectCode(openDatabase(url), 'DB_SCHEMA_TOO_NEW', new RegExp(`version ${SCHEMA_VERSION + 1}`));
        const raw = await openDatabase(url, { migrate: false });
        try {
          assert.equal((await raw.query('SELECT id FROM schema_migrations')).length, MIGRATIONS.length + 1);
        } finally {
          await raw.close();
        }
      });

      it('apply a later migration to a database at an earlier version, all or nothing', async () => {
        const url = await freshUrl();
        const db = await openDatabase(url);
        try {
          const broken = [...MIGRATIONS, { id: SCHEMA_VERSION + 1, name: 'broken', sql: 'CREATE TABLE extra (id TEXT PRIMARY KEY); SELECT * FROM no_such_table' }];
          await expectCode(migrate(db, broken), 'INTERNAL');
          assert.equal((await db.query('SELECT id FROM schema_migrations')).length, MIGRATIONS.length, 'failed migration not recorded');
          const good = [...MIGRATIONS, { id: SCHEMA_VERSION + 1, name: 'extra', sql: 'CREATE TABLE extra (id TEXT PRIMARY KEY)' }];
          assert.deepEqual((await migrate(db, good)).applied, [SCHEMA_VERSION + 1], 'the broken attempt left no table behind');
          await db.run('INSERT INTO extra (id) VALUES (?)', ['a']);
        } finally {
          await db.close();
        }
      });
    });

    describe('repositories', () => {
      it('users and API tokens round-trip; only the secret hash is stored', withRepos(async (r) => {
        const user = await r.users.create({ name: 'alice', role: 'operator' });
        assert.deepEqual(await r.users.get(user.id), { id: user.id, name: 'alice', role: 'operator', createdAt: '2026-01-02T03:04:05.000Z', disabled: false });
        assert.deepEqual(await r.users.update(user.id, { role: 'owner', disabled: true }), { ...user, role: 'owner', disabled: true });
        assert.deepEqual(await r.users.findByName('alice'), { ...user, role: 'owner', disabled: true });
        const token = await r.apiTokens.create({ userId: user.id, name: 'ci', secretHash: 'a'.repeat(64), expiresAt: '2027-01-01T00:00:00.000Z' });
        assert.deepEqual(await r.apiTokens.findBySecretHash('a'.repeat(64)), token);
        assert.equal(await r.apiTokens.findBySecretHash('b'.repeat(64)), undefined);
        const used = await r.apiTokens.update(token.id, { lastUsedAt: '2026-01-03T00:00:00.000Z', revoked: true });
        assert.equal(used.revoked, true);
        assert.deepEqual(await r.apiTokens.list({ userId: user.id }), [used]);
        await expectCode(r.apiTokens.create({ userId: 'nobody', name: 'x', secretHash: 'c' }), 'NOT_FOUND');
        await r.users.delete(user.id);
        assert.deepEqual(await r.apiTokens.list(), [], 'tokens go with their user');
      }));

      it('vaults and registration keys round-trip', withRepos(async (r) => {
        const v = await r.vaults.create({ name: 'dr', location: 'site-b', storeUrl: 'file:///srv/store' });
        assert.deepEqual(await r.vaults.get(v.id), { ...v, recoveryNetwork: null });
        const updated = await r.vaults.update(v.id, { recoveryNetwork: 'recovery-net', location: 'site-c' });
        assert.deepEqual(await r.vaults.list(), [updated]);
        const key = await r.registrationKeys.create({ vaultId: v.id, expiresAt: '2026-01-07T03:04:05.000Z', secretHash: 'h1' });
        assert.deepEqual(key, { id: key.id, vaultId: v.id, createdAt: '2026-01-02T03:04:05.000Z', expiresAt: '2026-01-07T03:04:05.000Z', revoked: false });
        assert.deepEqual(await r.registrationKeys.findBySecretHash('h1'), key);
        assert.equal(await r.registrationKeys.findBySecretHash('forged'), undefined);
        assert.equal((await r.registrationKeys.revoke(key.id)).revoked, true);
        assert.deepEqual(await r.registrationKeys.list({ vaultId: v.id, revoked: false }), []);
        await r.vaults.delete(v.id);
        await expectCode(r.vaults.get(v.id), 'NOT_FOUND');
        assert.deepEqual(await r.registrationKeys.list(), [], 'keys go with their vault');
      }));

      it('servers, machines, push accounts and policies round-trip with 64-bit sizes', withRepos(async (r) => {
        const { vault, cs, ps, machine, policy } = await fixture(r);
        assert.deepEqual(await r.configServers.get(cs.id), cs);
        const beat = await r.configServers.update(cs.id, { lastHeartbeatAt: '2026-01-02T03:05:00.000Z', health: 'healthy' });
        assert.deepEqual(await r.configServers.list({ vaultId: vault.id }), [beat]);
        const psUpdated = await r.processServers.update(ps.id, { spoolUsedBytes: TIB, spoolLimitBytes: 4 * TIB + 7, throughputBytesPerSec: 3 * 2 ** 33 });
        assert.equal(psUpdated.spoolUsedBytes, TIB);
        assert.deepEqual(await r.processServers.get(ps.id), psUpdated);
        assert.equal(typeof psUpdated.spoolLimitBytes, 'number');
        const m = await r.machines.update(machine.id, { supported: false, supportReason: 'kernel 3.10 is older than 4.18', kernel: '3.10.0' });
        assert.deepEqual(await r.machines.findByName(cs.id, 'web-1'), m);
        assert.equal(m.supported, false);
        assert.equal(machine.supported, null);
        assert.deepEqual(await r.machines.list({ supported: false }), [m]);
        const secret = Buffer.from([0, 1, 2, 250, 255, 0, 9]);
        const account = await r.pushAccounts.create({ configServerId: cs.id, name: 'root', username: 'root', kind: 'password', encryptedSecret: secret });
        assert.deepEqual(await r.pushAccounts.get(account.id), account);
        assert.ok(!('encryptedSecret' in account), 'the model never carries the secret');
        assert.deepEqual(await r.pushAccounts.getEncryptedSecret(account.id), secret);
        await r.pushAccounts.update(account.id, { kind: 'key', encryptedSecret: Buffer.from('new ciphertext') });
        assert.equal((await r.pushAccounts.getEncryptedSecret(account.id)).toString(), 'new ciphertext');
        assert.equal((await r.pushAccounts.get(account.id)).kind, 'key');
        await expectCode(r.pushAccounts.getEncryptedSecret('missing'), 'NOT_FOUND');
        const p = await r.policies.update(policy.id, { retentionHours: 24 * 365 * 10, rpoThresholdSeconds: 2 ** 41 });
        assert.deepEqual(await r.policies.findByName(vault.id, 'default'), p);
        assert.equal(p.rpoThresholdSeconds, 2 ** 41);
        await r.policies.delete(policy.id);
        assert.deepEqual(await r.policies.list({ vaultId: vault.id }), []);
      }));

      it('replicated items round-trip JSON settings and 64-bit disk sizes', withRepos(async (r) => {
        const { vault, ps, machine, policy } = await fixture(r);
        const disks = [
          { name: 'vda', sizeBytes: TIB },
          { name: 'vdb "data" ✓', sizeBytes: 2 ** 52 + 1 },
        ];
        const item = await r.items.create({ vaultId: vault.id, machineId: machine.id, policyId: policy.id, processServerId: ps.id, compute: COMPUTE, disks });
        const got = await r.items.get(item.id);
        assert.deepEqual(got, item);
        assert.deepEqual(got.disks, disks);
        assert.deepEqual(got.compute, COMPUTE);
        assert.equal(got.state, 'enabling');
        const later = new Date('2026-01-02T04:00:00.000Z');
        const r2 = createRepositories(r.db, { now: () => later });
        const updated = await r2.items.update(item.id, { initialReplicationPercent: 42, rpoSeconds: 30, compute: { ...COMPUTE, ip: null } });
        assert.equal(updated.updatedAt, later.toISOString());
        assert.equal(updated.createdAt, item.createdAt);
        assert.equal(updated.compute.ip, null);
        assert.deepEqual(await r.items.findByMachine(machine.id), updated);
        assert.deepEqual(await r.items.list({ vaultId: vault.id, state: 'enabling' }), [updated]);
        assert.deepEqual(await r.items.list({ state: 'protected' }), []);
        await expectCode(r.items.update('missing', { rpoSeconds: 1 }), 'NOT_FOUND', /replicated item missing/);
      }));

      it('item state changes are compare-and-set', withRepos(async (r) => {
        const { vault, machine, policy } = await fixture(r);
        const item = await r.items.create({ vaultId: vault.id, machineId: machine.id, policyId: policy.id, compute: COMPUTE, disks: [] });
        assert.equal(await r.items.updateState(item.id, 'enabling', 'initial-replication'), true);
        assert.equal(await r.items.updateState(item.id, 'enabling', 'protected'), false, 'stale `from` loses');
        assert.equal((await r.items.get(item.id)).state, 'initial-replication');
        assert.equal(await r.items.updateState(item.id, 'initial-replication', 'protected', { initialReplicationPercent: 100 }), true);
        // Two racing transitions from the same state: exactly one wins.
        const outcomes = await Promise.all([
          r.items.updateState(item.id, 'protected', 'failing-over', { generation: 1 }),
          r.items.updateState(item.id, 'protected', 'test-failover'),
          r.items.updateState(item.id, 'protected', 'disabled'),
        ]);
        assert.deepEqual(outcomes.filter(Boolean).length, 1, `one winner: ${outcomes.join(',')}`);
        const final = await r.items.get(item.id);
        assert.equal(final.initialReplicationPercent, 100);
        assert.notEqual(final.state, 'protected');
        await expectCode(r.items.updateState('missing', 'protected', 'failing-over'), 'NOT_FOUND');
      }));

      it('jobs keep their steps in order and record step progress', withRepos(async (r, clock) => {
        const { vault, machine, policy } = await fixture(r);
        const item = await r.items.create({ vaultId: vault.id, machineId: machine.id, policyId: policy.id, compute: COMPUTE, disks: [] });
        const names = ['Prerequisites check', 'Install agent', 'Initial replication', 'Finalize', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
        const job = await r.jobs.create({ kind: 'enable-protection', itemId: item.id, initiator: 'user-1', steps: names });
        assert.deepEqual(await r.jobs.get(job.id), job);
        assert.deepEqual(job.steps.map((s) => s.name), names);
        assert.ok(job.steps.every((s) => s.state === 'queued' && s.progressPercent === 0));
        clock.now = new Date('2026-01-02T03:10:00.000Z');
        assert.equal(await r.jobs.updateState(job.id, 'queued', 'running', { startedAt: clock.now.toISOString() }), true);
        assert.equal(await r.jobs.updateState(job.id, 'queued', 'running'), false, 'a job is claimed once');
        await r.jobs.updateStep(job.id, 0, { state: 'succeeded', progressPercent: 100, startedAt: '2026-01-02T03:10:00.000Z', endedAt: '2026-01-02T03:10:01.000Z' });
        await r.jobs.updateStep(job.id, 2, { state: 'running', progressPercent: 37 });
        const got = await r.jobs.get(job.id);
        assert.equal(got.state, 'running');
        assert.deepEqual(got.steps[0], { name: names[0], state: 'succeeded', progressPercent: 100, startedAt: '2026-01-02T03:10:00.000Z', endedAt: '2026-01-02T03:10:01.000Z', error: null });
        assert.deepEqual(got.steps[2], { name: names[2], state: 'running', progressPercent: 37, startedAt: null, endedAt: null, error: null });
        assert.equal(got.steps[1]?.state, 'queued');
        await expectCode(r.jobs.updateStep(job.id, names.length, { progressPercent: 1 }), 'NOT_FOUND');
        await expectCode(r.jobs.updateStep('missing', 0, { progressPercent: 1 }), 'NOT_FOUND');
        const failed = await r.jobs.update(job.id, { state: 'failed', error: 'agent unreachable', endedAt: '2026-01-02T03:11:00.000Z' });
        assert.equal(failed.error, 'agent unreachable');
        const other = await r.jobs.create({ kind: 'test-failover', itemId: null, initiator: 'user-2', steps: ['Boot'] });
        assert.deepEqual((await r.jobs.list({ state: 'failed' })).map((j) => j.id), [job.id]);
        assert.deepEqual((await r.jobs.list({ state: 'queued' })).map((j) => j.id), [other.id]);
        assert.deepEqual((await r.jobs.list()).map((j) => j.id), [job.id, other.id], 'oldest first');
        assert.deepEqual((await r.jobs.list({ itemId: item.id })).map((j) => j.steps.length), [names.length]);
        await expectCode(r.jobs.create({ kind: 'failover', itemId: 'missing', initiator: 'u', steps: ['x'] }), 'NOT_FOUND');
        assert.equal((await r.jobs.list()).length, 2, 'a refused job leaves nothing behind');
        await r.jobs.delete(other.id);
        await expectCode(r.jobs.get(other.id), 'NOT_FOUND');
        assert.equal((await r.db.query('SELECT job_id FROM job_steps WHERE job_id = ?', [other.id])).length, 0);
      }));

      it('alerts are raised once per kind and subject while open, and clear idempotently', withRepos(async (r, clock) => {
        const a = await r.alerts.raise({ kind: 'rpo-threshold-exceeded', subjectId: 'item-1', severity: 'warning', message: 'RPO 20 min' });
        clock.now = new Date('2026-01-02T03:30:00.000Z');
        const again = await r.alerts.raise({ kind: 'rpo-threshold-exceeded', subjectId: 'item-1', severity: 'critical', message: 'RPO 40 min' });
        assert.equal(again.id, a.id);
        assert.equal(again.raisedAt, a.raisedAt);
        assert.equal(again.severity, 'critical');
        const parallel = await Promise.all(
          Array.from({ length: 10 }, () => r.alerts.raise({ kind: 'heartbeat-lost', subjectId: 'cs-1', severity: 'critical', message: 'no heartbeat' })),
        );
        assert.equal(new Set(parallel.map((p) => p.id)).size, 1, 'parallel raises make one alert');
        assert.equal((await r.alerts.list({ open: true })).length, 2);
        assert.equal(await r.alerts.clear('rpo-threshold-exceeded', 'item-1'), true);
        assert.equal(await r.alerts.clear('rpo-threshold-exceeded', 'item-1'), false, 'clearing twice is a no-op');
        const cleared = await r.alerts.get(a.id);
        assert.equal(cleared.clearedAt, '2026-01-02T03:30:00.000Z');
        const reraised = await r.alerts.raise({ kind: 'rpo-threshold-exceeded', subjectId: 'item-1', severity: 'warning', message: 'RPO 20 min' });
        assert.notEqual(reraised.id, a.id, 'raising after a clear opens a new alert');
        assert.deepEqual((await r.alerts.list({ open: false })).map((x) => x.id), [a.id]);
        assert.deepEqual((await r.alerts.list({ open: true, kind: 'rpo-threshold-exceeded' })).map((x) => x.id), [reraised.id]);
      }));

      it('the audit log appends and lists newest first, page by page', withRepos(async (r) => {
        const entries = [];
        for (let i = 0; i < 5; i++) {
          entries.push(await r.auditLog.append({ actor: i % 2 ? 'user-b' : 'user-a', action: `policy.create`, target: `p${i}`, outcome: 'allowed', requestId: `req-${i}` }));
        }
        const denied = await r.auditLog.append({ actor: 'user-c', action: 'failover.start', outcome: 'denied' });
        assert.deepEqual(denied.target, null);
        const all = await r.auditLog.list();
        assert.deepEqual(all, [denied, ...entries.reverse()]);
        const page1 = await r.auditLog.list({ limit: 2 });
        const page2 = await r.auditLog.list({ limit: 2, before: page1[1]?.id });
        assert.deepEqual([...page1, ...page2], all.slice(0, 4));
        assert.deepEqual((await r.auditLog.list({ actor: 'user-b' })).map((e) => e.target), ['p3', 'p1']);
      }));

      it('settings store JSON values', withRepos(async (r) => {
        assert.equal(await r.settings.get('missing'), undefined);
        await r.settings.set('admin', { created: true, n: TIB, names: ['a', 'ü'] });
        await r.settings.set('admin', { created: true, n: TIB + 1, names: ['a', 'ü'] });
        assert.deepEqual(await r.settings.get('admin'), { created: true, n: TIB + 1, names: ['a', 'ü'] });
        assert.deepEqual(await r.settings.list(), { admin: { created: true, n: TIB + 1, names: ['a', 'ü'] } });
        assert.equal(await r.settings.delete('admin'), true);
        assert.equal(await r.settings.delete('admin'), false);
      }));
    });

    describe('errors', () => {
      it('unique violations are CONFLICT, naming the resource', withRepos(async (r) => {
        const { vault, cs, policy } = await fixture(r);
        await expectCode(r.vaults.create({ name: 'dr', location: 'x', storeUrl: 'file:///y' }), 'CONFLICT', /vault/);
        await expectCode(r.policies.create({ ...policy, name: 'default' }), 'CONFLICT', /replication policy/);
        await expectCode(r.machines.create({ configServerId: cs.id, name: 'web-1', privateIp: '10.0.0.11', os: 'debian-12' }), 'CONFLICT', /machine/);
        await expectCode(r.configServers.create({ vaultId: vault.id, name: 'cs1', address: 'a', version: 'v' }), 'CONFLICT');
        await r.users.create({ name: 'bob', role: 'reader' });
        await expectCode(r.users.create({ name: 'bob', role: 'owner' }), 'CONFLICT', /user/);
        const other = await r.vaults.create({ name: 'dr2', location: 'x', storeUrl: 'file:///y' });
        await r.policies.create({ ...policy, vaultId: other.id, name: 'default' }); // unique per vault, not globally
        await expectCode(r.vaults.update(other.id, { name: 'dr' }), 'CONFLICT');
        try {
          await r.vaults.create({ name: 'dr', location: 'x', storeUrl: 'file:///y' });
        } catch (err) {
          assert.ok(isLifeboatError(err) && err.retryable === false, 'a taken name is not worth retrying');
        }
      }));

      it('missing rows are NOT_FOUND; deleting a row still referenced is CONFLICT', withRepos(async (r) => {
        const { vault, machine, policy } = await fixture(r);
        await expectCode(r.vaults.get('nope'), 'NOT_FOUND', /vault nope does not exist/);
        await expectCode(r.vaults.update('nope', { location: 'x' }), 'NOT_FOUND');
        await expectCode(r.vaults.delete('nope'), 'NOT_FOUND');
        await expectCode(r.jobs.get('nope'), 'NOT_FOUND');
        await expectCode(r.alerts.get('nope'), 'NOT_FOUND');
        await expectCode(r.policies.create({ ...policy, vaultId: 'nope', name: 'x' }), 'NOT_FOUND');
        await r.items.create({ vaultId: vault.id, machineId: machine.id, policyId: policy.id, compute: COMPUTE, disks: [] });
        await expectCode(r.policies.delete(policy.id), 'CONFLICT', /still in use/);
        await expectCode(r.items.create({ vaultId: vault.id, machineId: machine.id, policyId: policy.id, compute: COMPUTE, disks: [] }), 'CONFLICT');
        assert.equal(await r.vaults.find('nope'), undefined);
      }));
    });

    describe('transactions and concurrency', () => {
      it('roll back everything when the function throws, and rethrow its error', withRepos(async (r) => {
        const boom = new Error('boom');
        await assert.rejects(
          r.db.transaction(async (tx) => {
            await r.vaults.create({ name: 'inside', location: 'x', storeUrl: 'file:///y' });
            await tx.run('INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)', ['k', '1', 't']);
            await r.db.transaction(async () => {
              await r.settings.set('nested', true); // joins the outer transaction
            });
            throw boom;
          }),
          (err) => err === boom,
        );
        assert.deepEqual(await r.vaults.list(), []);
        assert.deepEqual(await r.settings.list(), {});
        await r.db.transaction(async () => {
          await r.vaults.create({ name: 'committed', location: 'x', storeUrl: 'file:///y' });
          await r.settings.set('nested', true);
        });
        assert.equal((await r.vaults.list()).length, 1);
        assert.equal(await r.settings.get('nested'), true);
      }));

      it('a constraint error inside a transaction rolls back its earlier writes', withRepos(async (r) => {
        await r.vaults.create({ name: 'taken', location: 'x', storeUrl: 'file:///y' });
        await expectCode(
          r.db.transaction(async () => {
            await r.users.create({ name: 'carol', role: 'owner' });
            await r.vaults.create({ name: 'taken', location: 'x', storeUrl: 'file:///y' });
          }),
          'CONFLICT',
        );
        assert.equal(await r.users.findByName('carol'), undefined);
      }));

      it('work outside a transaction does not see its uncommitted writes', withRepos(async (r) => {
        let release!: () => void;
        const gate = new Promise<void>((resolve) => (release = resolve));
        let entered!: () => void;
        const inside = new Promise<void>((resolve) => (entered = resolve));
        const tx = r.db.transaction(async () => {
          await r.settings.set('draft', 1);
          entered();
          await gate;
          throw new Error('abandon');
        });
        await inside;
        const outside = r.settings.get('draft');
        release();
        await assert.rejects(tx, /abandon/);
        assert.equal(await outside, undefined);
        assert.equal(await r.settings.get('draft'), undefined);
      }));

      it('50 parallel step progress updates are all kept', withRepos(async (r) => {
        const steps = Array.from({ length: 50 }, (_, i) => `step ${i}`);
        const job = await r.jobs.create({ kind: 'enable-protection', itemId: null, initiator: 'test', steps });
        await Promise.all(steps.map((_, i) => r.jobs.updateStep(job.id, i, { state: 'running', progressPercent: i + 1 })));
        const got = await r.jobs.get(job.id);
        assert.deepEqual(got.steps.map((s) => s.progressPercent), steps.map((_, i) => i + 1));
        assert.deepEqual(got.steps.map((s) => s.name), steps);
      }));

      it('50 parallel read-modify-write transactions lose no increment', withRepos(async (r) => {
        await r.settings.set('counter', 0);
        await Promise.all(
          Array.from({ length: 50 }, () =>
            r.db.transaction(async () => {
              const n = (await r.settings.get<number>('counter')) ?? 0;
              await new Promise((resolve) => setImmediate(resolve));
              await r.settings.set('counter', n + 1);
            }),
          ),
        );
        assert.equal(await r.settings.get('counter'), 50);
      }));

      it('64-bit integers round-trip exactly through plain queries', withRepos(async (r) => {
        await r.db.exec('CREATE TABLE big (id TEXT PRIMARY KEY, n BIGINT NOT NULL)');
        const values = [0, 1, -1, TIB, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER];
        for (const [i, n] of values.entries()) await r.db.run('INSERT INTO big (id, n) VALUES (?, ?)', [`v${i}`, n]);
        const rows = await r.db.query<{ n: number }>('SELECT n FROM big ORDER BY id');
        assert.deepEqual(rows.map((row) => row.n), values);
        const agg = await r.db.one('SELECT COUNT(*) AS c, SUM(n) AS s FROM big WHERE n > ? AND n < ?', [0, 2 ** 41]);
        assert.deepEqual(agg, { c: 3, s: 1 + TIB + TIB + 12345 }, 'COUNT and SUM come back as numbers too');
      }));
    });
  });
}

