/**
 * End-to-end proof of a recovery plan (docs/recovery.md, "Recovery plans"), real
 * processes only, through the CLI: two groups — the primary machine of the
 * proof (test/e2e/world.ts) with a pre-script and a manual action, then a
 * second machine (a static copy of a guest image protected with the scan
 * tracker by a second agent). The plan's test failover runs the script with the
 * plan's variables, fails over the first group, waits at the manual step until
 * `lifeboat job ack`, and only then the second group; the plan's cleanup
 * leaves both items protected and no QEMU behind.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Job } from '../../src/core/model.js';
import { buildGuestImage } from '../helpers/guest.js';
import { PRIMARY_MARKER } from '../helpers/machine.js';
import { RecoveryWorld, pathsNamed, qemuProcesses } from './world.js';

const SECOND_MARKER = 'LIFEBOAT-E2E-SECOND-BOOTED';

describe('end-to-end recovery plan: two groups, a script step, a manual step (server, agents, QEMU; CLI only)', { concurrency: false }, () => {
  let w: RecoveryWorld;

  before(async () => {
    w = await RecoveryWorld.start();
  });
  after(async () => {
    await w?.close();
  });

  it('test failover of the plan runs the script, waits for the acknowledgement between the groups; cleanup of the plan', async () => {
    const { itemId } = w;
    w.ok(['drill', 'settings', itemId, '--boot-marker', PRIMARY_MARKER, '--boot-timeout', '600']);

    // The second machine: a static copy of a guest image, protected with the scan tracker by a second agent.
    const secondDir = join(w.dir, 'second');
    mkdirSync(secondDir, { recursive: true });
    const second = await buildGuestImage({ dir: secondDir, marker: SECOND_MARKER, payload: 'lifeboat-e2e-second', shell: true });
    const p2 = w.protect('web-2', { disks: [{ name: 'root', tracker: { kind: 'scan', path: second.imagePath } }] }, secondDir);
    const agent2 = w.startAgent(p2.config, p2.stateDir);
    await w.until('web-2 protected', () => (w.item(p2.itemId).state === 'protected' ? true : undefined), 300_000, () => agent2.log().slice(-3000));
    w.ok(['drill', 'settings', p2.itemId, '--boot-marker', SECOND_MARKER, '--boot-timeout', '600']);

    // The script step: an executable the administrator put in <data dir>/scripts/.
    const scriptsDir = join(w.dataDir, 'scripts');
    mkdirSync(scriptsDir, { recursive: true });
    const scriptLog = join(w.dir, 'plan-script.log');
    writeFileSync(join(scriptsDir, 'e2e-pre.sh'), `#!/bin/sh\necho "$LIFEBOAT_PLAN_ID $LIFEBOAT_OPERATION $LIFEBOAT_GROUP" >> '${scriptLog}'\n`);
    chmodSync(join(scriptsDir, 'e2e-pre.sh'), 0o755);

    const planFile = join(w.dir, 'plan.json');
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
    const plan = w.okJson<{ id: string }>(['plan', 'create', 'e2e-plan', '--vault', 'west', '--file', planFile]);

    const job = w.okJson<Job>(['plan', 'test-failover', plan.id, '--no-wait']);
    // The job pauses at the manual step until it is acknowledged; the second group has not started.
    const waiting = await w.until('the plan to wait at its manual step', () => {
      const j = w.okJson<Job>(['job', 'show', job.id]);
      assert.notEqual(j.state, 'failed', JSON.stringify(j, null, 2));
      const step = j.steps.findIndex((st) => st.state === 'running' && st.name.includes(manualAction));
      return step >= 0 ? { job: j, step } : undefined;
    }, 480_000);
    assert.equal(w.item().state, 'test-failover', 'the first group failed over before the manual step');
    assert.equal(w.item(p2.itemId).state, 'protected', 'the second group waits for the manual step');
    assert.match(readFileSync(scriptLog, 'utf8'), new RegExp(`^${plan.id} test-failover web$`, 'm'), 'the pre-script ran with the plan, operation and group');
    const ackedAt = Date.now();
    w.ok(['job', 'ack', job.id, '--step', String(waiting.step)]);
    await w.watch(job.id);
    assert.equal(w.item(p2.itemId).state, 'test-failover');

    const r1 = w.report();
    const r2 = w.report(p2.itemId);
    for (const r of [r1, r2]) {
      assert.equal(r.planId, plan.id, 'the drill ran for the plan');
      assert.equal(r.outcome, 'passed', JSON.stringify(r));
      assert.ok(r.machineId, 'the report names its test machine');
    }
    assert.match(w.machineConsole(r1.machineId as string), new RegExp(PRIMARY_MARKER), 'the first group booted');
    assert.match(w.machineConsole(r2.machineId as string), new RegExp(SECOND_MARKER), 'the second group booted');
    assert.ok(Date.parse(r2.startedAt) >= ackedAt - 1000, 'the second group started after the acknowledgement');

    const cleanup = w.okJson<Job>(['plan', 'cleanup', plan.id, '--no-wait']);
    await w.watch(cleanup.id);
    assert.equal(w.item().state, 'protected');
    assert.equal(w.item(p2.itemId).state, 'protected');
    for (const r of [r1, r2]) {
      assert.deepEqual(qemuProcesses(r.machineId as string), [], `no QEMU of ${r.machineId} is left`);
      assert.deepEqual(pathsNamed(w.dataDir, r.machineId as string), [], `no file of ${r.machineId} is left`);
    }
    assert.match(w.report().consoleLog, new RegExp(PRIMARY_MARKER), "the first item's report keeps its console tail");
    assert.match(w.report(p2.itemId).consoleLog, new RegExp(SECOND_MARKER), "the second item's report keeps its console tail");
    await w.stopAgent(agent2);
  });
});
