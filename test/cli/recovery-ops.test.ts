/**
 * The recovery commands (src/cli/commands/recovery.ts) against a vault with the fake
 * compute driver and real recovery points: drill settings from flags, a test failover
 * followed to its report (and the exit code of a failed drill), the report printed,
 * cleanup with notes, failover, change of point and commit.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Writable } from 'node:stream';
import { ERROR_CODES } from '../../src/core/errors.js';
import type { DrillReport, DrillSettings, Job } from '../../src/core/model.js';
import type { PointManifest } from '../../src/format/manifest.js';
import { main } from '../../src/cli/main.js';
import { bootBytes, startRecoveryVault, type RecoveryVault } from '../vault/recovery/harness.js';

const MIN = 60_000;

describe('lifeboat test-failover, failover and drill', () => {
  let v: RecoveryVault;
  let old: PointManifest[];

  before(async () => {
    v = await startRecoveryVault('cli-recovery', {
      guest: (_id, command) => (command === 'cat /etc/hostname' ? { exitCode: 0, output: 'web\n' } : { exitCode: 1, output: 'no such file\n' }),
    });
    old = await v.pointsAt(Date.now() - 30 * MIN, 0x81);
    await v.pointsAt(Date.now() - 10 * MIN, 0x82);
  });
  after(async () => v.stop());

  const cli = async (...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> => {
    let stdout = '';
    let stderr = '';
    const sink = (append: (s: string) => void) =>
      new Writable({
        write(chunk: Buffer, _enc, done) {
          append(chunk.toString());
          done();
        },
      });
    const status = await main(args, {
      env: { LIFEBOAT_SERVER: v.server.url, LIFEBOAT_TOKEN: v.token, LIFEBOAT_CONFIG_DIR: `${v.tmpDir}/cli-config` },
      stdout: sink((s) => (stdout += s)) as unknown as NodeJS.WriteStream,
      stderr: sink((s) => (stderr += s)) as unknown as NodeJS.WriteStream,
    });
    return { status, stdout, stderr };
  };

  it('drill settings: probes, boot marker and schedule from flags, shown back', async () => {
    const r = await cli('drill', 'settings', v.item.id, '--probe', 'cmd:cat /etc/hostname=>web', '--boot-marker', '^FAKE-BOOTED', '--boot-timeout', '30', '--every-hours', '24', '--probe-timeout', '5');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /boot marker:\s+\/\^FAKE-BOOTED\//);
    assert.match(r.stdout, /schedule:\s+every 24 h/);
    assert.match(r.stdout, /cmd-1\s+command\s+cat \/etc\/hostname => web\s+5 s/);
    const json = await cli('drill', 'settings', v.item.id, '--json');
    const settings = JSON.parse(json.stdout) as DrillSettings;
    assert.deepEqual(settings.probes, [{ name: 'cmd-1', kind: 'command', command: 'cat /etc/hostname', expectOutput: 'web', timeoutSeconds: 5 }]);
    assert.equal(settings.bootTimeoutSeconds, 30);
    const bad = await cli('drill', 'settings', v.item.id, '--probe', 'udp:53');
    assert.equal(bad.status, ERROR_CODES.USAGE.exitCode);
  });

  it('test-failover start follows the job and prints the report; drill report shows it again; cleanup keeps the notes', async () => {
    const r = await cli('test-failover', 'start', v.item.id, '--point', old[0]!.pointId);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /step 5\/5 Check the test virtual machine: succeeded/);
    assert.match(r.stdout, /drill report \S+: PASSED/);
    assert.match(r.stdout, new RegExp(`${v.item.id}\\.sda\\s+${old[0]!.pointId}\\s+\\S+\\s+crash`));
    assert.match(r.stdout, /RPO:\s+30 min/);
    assert.match(r.stdout, /cmd-1\s+command\s+ok/);
    assert.match(r.stdout, /driver:\s+fake \(tcg\)/);

    const clean = await cli('test-failover', 'cleanup', v.item.id, '--notes', 'app answered; signed off');
    assert.equal(clean.status, 0, clean.stderr);
    assert.equal(v.fake.size, 0);
    const shown = await cli('drill', 'report', v.item.id);
    assert.equal(shown.status, 0, shown.stderr);
    assert.match(shown.stdout, /notes: app answered; signed off/);
    assert.match(shown.stdout, /console \(last 20 lines\):\n\s+fake firmware\n\s+FAKE-BOOTED/);
    const json = JSON.parse((await cli('drill', 'report', v.item.id, '--json')).stdout) as DrillReport;
    assert.equal(json.outcome, 'passed');
    const byId = await cli('drill', 'report', v.item.id, '--report', json.id, '--json');
    assert.equal((JSON.parse(byId.stdout) as DrillReport).id, json.id);
  });

  it('a drill whose probe fails exits with the code of DRILL_FAILED and prints the failed report', async () => {
    await cli('drill', 'settings', v.item.id, '--probe', 'cmd:cat /missing=>x', '--probe-timeout', '1', '--boot-marker', '');
    const r = await cli('test-failover', 'start', v.item.id, '--json');
    assert.equal(r.status, ERROR_CODES.DRILL_FAILED.exitCode, r.stderr);
    const out = JSON.parse(r.stdout) as Job & { report: DrillReport };
    assert.equal(out.state, 'failed');
    assert.equal(out.report.jobId, out.id);
    assert.equal(out.report.outcome, 'failed');
    assert.equal(out.report.probes[0]?.ok, false);
    assert.match(r.stderr, /DRILL_FAILED: the drill of item .* failed: probe failed: cmd-1/);
    assert.equal((await cli('test-failover', 'cleanup', v.item.id)).status, 0);
  });

  it('failover start, change-point and commit', async () => {
    const f = await cli('failover', 'start', v.item.id, '--point', 'latest-processed', '--shutdown-source');
    assert.equal(f.status, 0, f.stdout + f.stderr);
    assert.match(f.stdout, /step 2\/6 Shut down the source machine: failed/);
    assert.match(f.stdout, /failed-over \(generation \d+\)/);
    assert.match(f.stdout, new RegExp(`replica machine failover-${v.item.id.toLowerCase()} \\(fake, network user\\): running`));
    const c = await cli('failover', 'change-point', v.item.id, '--point', new Date(Date.now() - 20 * MIN).toISOString());
    assert.equal(c.status, 0, c.stdout + c.stderr);
    assert.match(c.stdout, new RegExp(`${v.item.id}\\.sda\\s+${old[0]!.pointId}`));
    assert.match(await v.fake.console(`failover-${v.item.id.toLowerCase()}`), new RegExp(bootBytes(0x81)));
    const m = await cli('failover', 'commit', v.item.id, '--json');
    assert.equal(m.status, 0, m.stderr);
    assert.equal((JSON.parse(m.stdout) as Job).state, 'succeeded');
    assert.deepEqual(
      (await v.repo.listPoints(`${v.item.id}.sda`)).map((p) => p.pointId),
      [old[0]!.pointId],
    );
    const refused = await cli('failover', 'change-point', v.item.id, '--point', 'latest');
    assert.equal(refused.status, ERROR_CODES.ILLEGAL_TRANSITION.exitCode);
    const usage = await cli('failover', 'start', v.item.id, '--point', 'last-week');
    assert.equal(usage.status, ERROR_CODES.USAGE.exitCode);
  });
});
