/**
 * `lifeboat plan …` and `lifeboat job ack` (the CLI's main() in this process)
 * against the assembled vault with the in-test item operations of
 * test/vault/plans/harness.ts: create from flags and from a file, show, list,
 * a test failover followed to its manual action, acknowledged, followed to the
 * end; failover flags; the drill schedule; delete.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { DrillSettings, Job, RecoveryPlan } from '../../src/core/model.js';
import { main } from '../../src/cli/main.js';
import { startPlansVault, type PlansVault } from '../vault/plans/harness.js';

interface Run {
  code: number;
  out: string;
  err: string;
}

describe('lifeboat plan and lifeboat job ack', () => {
  let v: PlansVault;

  before(async () => {
    v = await startPlansVault('cli-plans');
  });
  after(async () => v.stop());

  /** Runs the CLI; `live` sees stdout as it is written. */
  const cli = async (args: string[], live?: { out: string }): Promise<Run> => {
    let out = '';
    let err = '';
    const sink = (add: (s: string) => void) =>
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          add(chunk.toString());
          cb();
        },
      });
    const code = await main(args, {
      env: { LIFEBOAT_SERVER: v.server.url, LIFEBOAT_TOKEN: v.token, HOME: v.tmpDirOf(), XDG_CONFIG_HOME: v.tmpDirOf() },
      stdout: sink((s) => {
        out += s;
        if (live) live.out += s;
      }),
      stderr: sink((s) => (err += s)),
    });
    return { code, out, err };
  };
  const ok = async (args: string[]): Promise<Run> => {
    const r = await cli(args);
    assert.equal(r.code, 0, `lifeboat ${args.join(' ')} exited ${r.code}:\n${r.err}\n${r.out}`);
    return r;
  };
  const okJson = async <T>(args: string[]): Promise<T> => JSON.parse((await ok([...args, '--json'])).out) as T;

  it('creates a plan from flags (items by machine name), shows and lists it, runs it to its manual action, acknowledges it, follows it to the end', async () => {
    const [a, b, c] = [await v.item('cli-web-1'), await v.item('cli-web-2'), await v.item('cli-db-1')];
    v.script('warm-cache.sh', '#!/bin/sh\nexit 0\n');
    const plan = await okJson<RecoveryPlan>([
      'plan', 'create', 'cli-plan', '--vault', 'west',
      '--group', `web:cli-web-1,${b.id}`, '--group', 'db:cli-db-1',
      '--pre-script', 'db:warm-cache.sh', '--manual', 'web:check the DNS: all records', '--description', 'two tiers',
    ]);
    assert.deepEqual(plan.groups, [
      { name: 'web', itemIds: [a.id, b.id], preScripts: [], postScripts: [], manualActions: ['check the DNS: all records'] },
      { name: 'db', itemIds: [c.id], preScripts: ['warm-cache.sh'], postScripts: [], manualActions: [] },
    ]);
    const shown = await ok(['plan', 'show', 'cli-plan']);
    assert.match(shown.out, /web\s+.*check the DNS: all records/);
    assert.ok((await okJson<RecoveryPlan[]>(['plan', 'list'])).some((p) => p.id === plan.id));
    assert.ok((await okJson<RecoveryPlan[]>(['plan', 'list', '--vault', 'west'])).some((p) => p.id === plan.id));

    // Following the test failover stops at the manual action and says how to acknowledge it.
    const run = await ok(['plan', 'test-failover', 'cli-plan', '--point', 'latest']);
    assert.match(run.out, /step 1\/4 Group 1 \(web\): test failover of 2 items: succeeded/);
    assert.match(run.out, /waits for a manual action: check the DNS: all records\nwhen it is done: lifeboat job ack (\S+) --step 1\n/);
    const jobId = /lifeboat job ack (\S+)/.exec(run.out)![1]!;
    assert.deepEqual(v.world.calls.filter((x) => x.op === 'test-failover' && x.itemId === a.id).map((x) => (x.input as { point: unknown }).point), [{ kind: 'latest' }]);
    assert.ok(!v.world.calls.some((x) => x.itemId === c.id), 'the second group waits');

    // `job ack` without --step acknowledges the manual action that waits; once the job ended, an ack is refused.
    const acked = await ok(['job', 'ack', jobId]);
    assert.match(acked.out, /acknowledged step 1 \(Group 1 \(web\): manual action: check the DNS: all records\)/);
    const done = await v.waitJob(jobId);
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    const again = await cli(['job', 'ack', jobId, '--step', '1']);
    assert.equal(again.code, 8, again.err);
    assert.match(again.err, /not a manual action waiting for acknowledgement/);

    const cleanup = await okJson<Job>(['plan', 'cleanup', plan.id, '--notes', 'looked fine']);
    assert.equal(cleanup.state, 'succeeded');
    assert.equal(cleanup.kind, 'recovery-plan');
  });

  it('job watch of a plan waiting on a manual action says what to do and how to acknowledge it, and follows the plan to its end', async () => {
    const a = await v.item('cli-watch-1');
    await okJson<RecoveryPlan>(['plan', 'create', 'watch-plan', '--vault', 'west', '--group', `g:${a.id}`, '--manual', 'g:call the network team']);
    const job = await okJson<Job>(['plan', 'test-failover', 'watch-plan', '--no-wait']);
    const live = { out: '' };
    const watching = cli(['job', 'watch', job.id], live);
    const deadline = Date.now() + 30_000;
    while (!live.out.includes('lifeboat job ack') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.match(live.out, new RegExp(`job ${job.id} waits for a manual action: call the network team\nwhen it is done: lifeboat job ack ${job.id} --step 1\n`));
    await ok(['job', 'ack', job.id, '--step', '1']);
    const watched = await watching;
    assert.equal(watched.code, 0, watched.err);
    assert.match(watched.out, /job \S+ recovery-plan: succeeded/);
    assert.equal(watched.out.match(/waits for a manual action/g)?.length, 1, 'the hint is printed once');
  });

  it('creates a plan from a file; failover with --shutdown-source; a failed job exits non-zero with its error', async () => {
    const [a, b] = [await v.item('cli-file-1'), await v.item('cli-file-2')];
    const file = join(v.tmpDirOf(), 'plan.json');
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'all', itemIds: [a.id, b.id], preScripts: [], postScripts: [], manualActions: [] }] }));
    const plan = await okJson<RecoveryPlan>(['plan', 'create', 'file-plan', '--vault', v.vaultId, '--file', file]);
    v.world.behaviour.set(`failover:${b.id}`, 'fail-job');
    const failed = await cli(['plan', 'failover', 'file-plan', '--shutdown-source']);
    assert.notEqual(failed.code, 0);
    assert.match(failed.err + failed.out, /1 of 2 items failed: cli-file-2/);
    const call = v.world.calls.find((x) => x.op === 'failover' && x.itemId === a.id);
    assert.equal((call?.input as { shutdownSource: boolean }).shutdownSource, true);

    const queued = await okJson<Job>(['plan', 'cleanup', plan.id, '--no-wait']);
    assert.equal(queued.kind, 'recovery-plan');
    await v.waitJob(queued.id);
  });

  it('sets the drill schedule and deletes a plan; refuses malformed flags', async () => {
    const a = await v.item('cli-sched-1');
    await okJson<RecoveryPlan>(['plan', 'create', 'sched-plan', '--vault', 'west', '--group', `g:${a.id}`]);
    const before = Date.now();
    const s = await okJson<DrillSettings>(['plan', 'drill-schedule', 'sched-plan', '--every-hours', '24']);
    assert.equal(s.scheduleEveryHours, 24);
    assert.equal(s.subjectKind, 'plan');
    assert.ok(Math.abs(Date.parse(s.nextRunAt!) - (before + 24 * 3600_000)) < 60_000);
    assert.equal((await okJson<DrillSettings>(['plan', 'drill-schedule', 'sched-plan', '--every-hours', '0'])).nextRunAt, null);
    const bad = await cli(['plan', 'create', 'bad', '--vault', 'west', '--group', 'g:cli-sched-1', '--manual', 'nosuchgroup:do it']);
    assert.equal(bad.code, 2, bad.err);
    assert.match(bad.err, /--manual names group nosuchgroup/);
    await ok(['plan', 'delete', 'sched-plan']);
    assert.notEqual((await cli(['plan', 'show', 'sched-plan'])).code, 0);
  });
});
