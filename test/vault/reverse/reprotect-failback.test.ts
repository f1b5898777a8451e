/**
 * Reprotect and failback end to end (docs/recovery.md, "Reprotect and failback"), with
 * the real vault, process server and agent (scan tracker over an image file), and the
 * fake compute driver with change tracking:
 * - failover (the source shut down through the agent's shutdown command) and commit;
 * - the replica and the primary both write after the point; reprotect ships exactly the
 *   blocks that differ, and the vault restarting in the middle of the sync resumes it;
 * - reverse replication carries the replica's later writes to the primary, also after a
 *   vault restart;
 * - failback: the last changes arrive, the store's newest point (of the new generation)
 *   equals the replica, the item goes initial-replication → protected, the primary is
 *   started through the agent, and a later write on the primary reaches a new point
 *   without a full resync.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { main } from '../../../src/cli/main.js';
import { BLOCK, MiB, ReverseRig, waitUntil, writeAt } from './harness.js';

const block = (buf: Buffer, i: number): Buffer => buf.subarray(i * BLOCK, (i + 1) * BLOCK);

/** Runs the CLI in this process against the rig's vault; resolves with its exit code and output. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (d: Buffer) => (stdout += d.toString()));
  err.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await main(args, { env: {}, stdout: out, stderr: err });
  return { code, stdout, stderr };
}

test('reprotect ships only the blocks that differ and survives a vault restart; failback makes the replica the newest point and replication resumes incrementally', async (t) => {
  const rig = new ReverseRig(8 * MiB);
  t.after(() => rig.close());
  await rig.setUp((image) => writeAt(image, 0, randomBytes(2 * MiB)));
  const item = rig.item;

  // Protected: a point equal to the image.
  await waitUntil('a point equal to the image', async () => {
    await rig.vault.replica.processNow(item.id).catch(() => undefined);
    const p = await rig.newestPoint();
    return p?.data.equals(rig.imageBytes()) ? true : undefined;
  });
  await waitUntil('the item protected', async () => ((await rig.refreshItem()).state === 'protected' ? true : undefined));

  // Failover, shutting the source down through its agent, then commit.
  const failover = await rig.job(`/api/v1/items/${item.id}/failover`, { point: { kind: 'latest' }, shutdownSource: true });
  const failed = await rig.waitJob(failover.id);
  assert.equal(failed.state, 'succeeded', `${JSON.stringify(failed.steps)}\n${rig.tail()}`);
  assert.equal(failed.steps.find((s) => s.name === 'Shut down the source machine')?.error, null);
  assert.match(readFileSync(rig.marks, 'utf8'), /^shutdown$/m, 'the agent ran its shutdown command');
  const committing = await rig.waitJob((await rig.job(`/api/v1/items/${item.id}/commit`)).id);
  assert.equal(committing.state, 'succeeded', JSON.stringify(committing.steps));
  await waitUntil('the agent fenced', () => (rig.agent.report().mode === 'fenced' ? true : undefined));

  // After the point: the replica writes blocks 3, 10, 50; the primary (fenced, nothing shipped) 10, 20, 100.
  for (const b of [3, 10, 50]) rig.compute.write(rig.machineId, 'sda', b * BLOCK + 8192, randomBytes(4096));
  for (const b of [10, 20, 100]) writeAt(rig.image, b * BLOCK + 4096, randomBytes(4096));
  const differing = [3, 10, 20, 50, 100];

  // Reprotect, with the agent's pulls held: the queue fills and stays.
  rig.gate.hold = true;
  const reprotect = await rig.job(`/api/v1/items/${item.id}/reprotect`);
  const queued = await waitUntil('the differing blocks queued', async () => {
    const r = await rig.api('GET', `/api/v1/items/${item.id}/reverse`);
    return Number(r.json.queuedBlocks) > 0 ? r.json : undefined;
  });
  // A 64 KiB block that differs is queued whole, as 16 blocks of 4 KiB.
  assert.equal(queued.queuedBlocks, differing.length * (BLOCK / 4096), 'exactly the blocks that differ are queued');
  assert.equal(rig.agent.report().mode, 'reverse');

  // The vault restarts in the middle of the sync; the job resumes and the agent catches up.
  await rig.stopVault();
  await rig.startVault();
  rig.gate.hold = false;
  const synced = await rig.waitJob(reprotect.id);
  assert.equal(synced.state, 'succeeded', `${JSON.stringify(synced.steps)}\n${rig.tail()}`);
  assert.equal((await rig.refreshItem()).state, 'reprotected');
  const replica = await rig.replicaDisk();
  assert.ok(rig.imageBytes().equals(replica), 'the primary disk equals the replica after the sync');
  const status = (await rig.api('GET', `/api/v1/items/${item.id}/reverse`)).json as { jobs: Record<string, { bytes: number; blocks: number }> };
  assert.deepEqual(status.jobs[reprotect.id], { bytes: differing.length * BLOCK, blocks: differing.length * (BLOCK / 4096) }, 'the bytes shipped are those of the differing blocks, once');
  assert.ok(differing.length * BLOCK < rig.sizeBytes / 20, 'far below the disk size');
  await waitUntil('the agent to report what it wrote in its heartbeat', () =>
    rig.vault.agents.report(item.id)?.reverse?.bytesWritten === differing.length * BLOCK ? true : undefined,
  );

  // Reverse replication: a later write of the replica reaches the primary.
  const later = randomBytes(4096);
  rig.compute.write(rig.machineId, 'sda', 60 * BLOCK, later);
  await waitUntil('the replica write to reach the primary', () => (rig.imageBytes().subarray(60 * BLOCK, 60 * BLOCK + 4096).equals(later) ? true : undefined));

  // The loop survives a vault restart: it starts again for the reprotected item.
  await rig.stopVault();
  await rig.startVault();
  const afterRestart = randomBytes(4096);
  rig.compute.write(rig.machineId, 'sda', 80 * BLOCK, afterRestart);
  await waitUntil('a replica write after a vault restart to reach the primary', () => (rig.imageBytes().subarray(80 * BLOCK, 80 * BLOCK + 4096).equals(afterRestart) ? true : undefined));

  // Failback: a last write on the replica, queued but held from the agent until the failback job syncs.
  rig.gate.hold = true;
  rig.compute.write(rig.machineId, 'sda', 70 * BLOCK + 12288, randomBytes(4096));
  await waitUntil('the last write queued', async () => (Number((await rig.api('GET', `/api/v1/items/${item.id}/reverse`)).json.queuedBlocks) > 0 ? true : undefined));
  const last = await rig.replicaDisk();
  // Through the CLI: it follows the job and prints the bytes shipped.
  const running = cli(['failback', item.id, '--server', rig.vault.url, '--token', rig.ownerToken, '--json']);
  await waitUntil('the failback job to sync', async () => {
    const [job] = await rig.vault.repos.jobs.list({ kind: 'failback', itemId: item.id });
    return job?.steps.find((s) => s.name === 'Synchronize the last changes')?.state === 'running' ? true : undefined;
  });
  rig.gate.hold = false;
  const run = await running;
  assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}\n${rig.tail()}`);
  const printed = JSON.parse(run.stdout) as { id: string; state: string; shipped: { bytes: number; blocks: number } };
  assert.equal(printed.state, 'succeeded');
  assert.deepEqual(printed.shipped, { bytes: 4096, blocks: 1 }, 'the last change, one 4 KiB block the replica wrote, is what failback shipped');
  const back = await rig.vault.repos.jobs.get(printed.id);
  assert.deepEqual(
    back.steps.map((s) => [s.name, s.state]),
    [
      ['Prerequisites check for failback', 'succeeded'],
      ['Shut down the replica virtual machine', 'succeeded'],
      ['Fence the replica', 'succeeded'],
      ['Synchronize the last changes', 'succeeded'],
      ['Resume replication in the original direction', 'succeeded'],
      ['Start the primary machine', 'succeeded'],
    ],
  );
  assert.ok(rig.imageBytes().equals(last), 'the primary disk has the last changes');
  assert.ok(block(rig.imageBytes(), 70).equals(block(last, 70)));
  const point = await rig.newestPoint();
  const generation = (await rig.refreshItem()).generation;
  assert.equal(point?.generation, generation, "the newest point is of the item's new generation");
  assert.ok(point?.data.equals(last), "the store's newest point equals the replica");
  assert.match(readFileSync(rig.marks, 'utf8'), /^start$/m, 'the agent ran its start command');
  assert.equal((await rig.vault.repos.recoveredMachines.list()).length, 0, 'the replica machine is gone');
  assert.equal((await rig.compute.list()).length, 0);
  await waitUntil('the item protected again', async () => ((await rig.refreshItem()).state === 'protected' ? true : undefined));
  assert.equal(rig.agent.report().mode, 'replicate');
  assert.ok(rig.events.some((e) => e.event === 'digest-map-rebuilt' && e.disk === 'sda'));

  // Replication in the original direction, incrementally: a write on the primary reaches a new point.
  const resumedAt = rig.committedCuts().length;
  const fresh = randomBytes(4096);
  writeAt(rig.image, 90 * BLOCK, fresh);
  await waitUntil(
    'a point with the write on the primary',
    async () => {
      await rig.vault.replica.processNow(item.id).catch(() => undefined);
      const p = await rig.newestPoint();
      return p && p.generation === generation && p.data.equals(rig.imageBytes()) ? true : undefined;
    },
    60_000,
  );
  const cuts = rig.committedCuts().slice(resumedAt);
  assert.ok(cuts.length > 0);
  const shipped = cuts.reduce((n, c) => n + c.bytes, 0);
  assert.ok(shipped < MiB, `no full resync: ${shipped} bytes shipped after failback for a 4 KiB write on an 8 MiB disk`);
});
