/**
 * The behaviour every compute driver must show (src/compute/driver.ts). A
 * driver's test file calls computeContractSuite() with a setup that gives the
 * driver and the disks of a machine; the suite checks the life cycle and its
 * idempotence, the error codes, that the sources are never written, that the
 * console is captured, and that destroy() leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isLifeboatError, type ErrorCode } from '../../src/core/errors.js';
import type { ComputeDriver, MachineDiskSpec, MachineSpec } from '../../src/compute/driver.js';
import { hashSource } from '../helpers/compute.js';

export interface ComputeUnderTest {
  readonly driver: ComputeDriver;
  /** The disks of the machine the suite creates; their sources are hashed before and after. */
  readonly disks: readonly MachineDiskSpec[];
  /** Booting drivers: a console line the machine prints once it is up. */
  readonly bootPattern?: RegExp;
  /** How long a boot may take (default 120 s). */
  readonly bootTimeoutMs?: number;
  /** What is left of machine `id` outside the driver's own answers (files, processes); [] when nothing. */
  leftovers(id: string): Promise<string[]>;
  cleanup(): Promise<void>;
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, what: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isLifeboatError(err), `${what}: a LifeboatError, got ${String(err)}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    return true;
  });
}

export function computeContractSuite(name: string, setup: () => Promise<ComputeUnderTest>): void {
  describe(`compute contract: ${name}`, { concurrency: false }, () => {
    let t: ComputeUnderTest;
    let driver: ComputeDriver;
    let hashesBefore: string[];
    const id = 'contract-m1';
    const spec = (): MachineSpec => ({ id, name: 'contract machine', disks: t.disks, network: { kind: 'none' } });

    before(async () => {
      t = await setup();
      driver = t.driver;
      hashesBefore = await Promise.all(t.disks.map((d) => hashSource(d.source)));
    });

    after(async () => {
      await driver?.destroy(id).catch(() => undefined);
      await t?.cleanup();
    });

    test('probe says the driver is available', async () => {
      const probe = await driver.probe();
      assert.equal(probe.available, true, probe.reason ?? '');
      assert.equal(probe.reason, null);
    });

    test('unknown ids are NOT_FOUND; a malformed id is refused at create', async () => {
      await rejectsWith(driver.status('no-such-machine'), 'NOT_FOUND', 'status');
      await rejectsWith(driver.start('no-such-machine'), 'NOT_FOUND', 'start');
      await rejectsWith(driver.stop('no-such-machine'), 'NOT_FOUND', 'stop');
      await rejectsWith(driver.console('no-such-machine'), 'NOT_FOUND', 'console');
      await rejectsWith(driver.readDisk('no-such-machine', 'root'), 'NOT_FOUND', 'readDisk');
      await rejectsWith(driver.waitForConsole('no-such-machine', /x/, { timeoutMs: 100 }), 'NOT_FOUND', 'waitForConsole');
      await rejectsWith(driver.status('../etc'), 'NOT_FOUND', 'status of a path');
      await rejectsWith(driver.create({ ...spec(), id: 'Bad/Id' }), 'VALIDATION', 'create with a bad id');
      assert.deepEqual(await driver.list(), []);
    });

    test('create makes a machine in state created, listed; a second create with the id is CONFLICT', async () => {
      const status = await driver.create(spec());
      assert.equal(status.id, id);
      assert.equal(status.state, 'created');
      assert.equal(status.driver, driver.name);
      assert.deepEqual(
        (await driver.list()).map((m) => m.id),
        [id],
      );
      await rejectsWith(driver.create(spec()), 'CONFLICT', 'duplicate create');
      assert.equal((await driver.status(id)).state, 'created', 'the failed create left the machine as it was');
      await rejectsWith(driver.readDisk(id, 'no-such-disk'), 'NOT_FOUND', 'readDisk of an unknown disk');
    });

    test('readDisk shows the source content before the machine ran', async () => {
      const disk = t.disks[0] as MachineDiskSpec;
      const view = await driver.readDisk(id, disk.name);
      try {
        assert.ok(view.sizeBytes >= disk.source.sizeBytes);
        assert.equal(await hashSource({ ...view, sizeBytes: disk.source.sizeBytes }), hashesBefore[0]);
      } finally {
        await view.close();
      }
    });

    test('start and stop are idempotent; the console is captured; waitForConsole times out and fails when the machine stops', async () => {
      if (!driver.capabilities.boots) {
        await rejectsWith(driver.start(id), 'UNSUPPORTED', 'start of a driver that does not boot');
        assert.equal((await driver.stop(id)).state, 'created');
        return;
      }
      const pattern = t.bootPattern as RegExp;
      assert.equal((await driver.start(id)).state, 'running');
      assert.equal((await driver.start(id)).state, 'running', 'a second start is a no-op');
      const seen = await driver.waitForConsole(id, pattern, { timeoutMs: t.bootTimeoutMs ?? 120_000 });
      assert.match(seen.line, pattern);
      assert.ok(seen.atMs <= Date.now());
      const again = await driver.waitForConsole(id, pattern, { timeoutMs: 1000 });
      assert.equal(again.line, seen.line, 'a line already printed is found again');
      assert.ok((await driver.console(id)).includes(seen.line), 'console() holds the line');
      assert.ok((await driver.console(id, 10)).length <= 10, 'console(maxBytes) is capped');
      await rejectsWith(driver.waitForConsole(id, /this-line-never-comes/, { timeoutMs: 500 }), 'TIMEOUT', 'waitForConsole on a running machine');

      assert.equal((await driver.stop(id, { graceful: false })).state, 'stopped');
      assert.equal((await driver.stop(id, { graceful: true, timeoutMs: 1000 })).state, 'stopped', 'a second stop is a no-op');
      assert.equal((await driver.status(id)).state, 'stopped');
      await rejectsWith(driver.waitForConsole(id, /this-line-never-comes/, { timeoutMs: 30_000 }), 'COMPUTE_FAILED', 'waitForConsole on a stopped machine');
      assert.ok((await driver.console(id)).includes(seen.line), 'the console outlives the machine');
    });

    test('the sources were never written', async () => {
      assert.deepEqual(await Promise.all(t.disks.map((d) => hashSource(d.source))), hashesBefore);
    });

    test('destroy removes everything and is idempotent', async () => {
      await driver.destroy(id);
      await driver.destroy(id);
      assert.deepEqual(await driver.list(), []);
      await rejectsWith(driver.status(id), 'NOT_FOUND', 'status after destroy');
      assert.deepEqual(await t.leftovers(id), []);
      await driver.destroy('never-existed');
    });
  });
}
