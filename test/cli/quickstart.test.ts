/**
 * `lifeboat quickstart` end to end, from source, as a person runs it: the first start
 * creates the vault and the sample machines, protects `sample`, runs a drill and says
 * it is ready (`--json`: one ready line); the portal answers and `admin` signs in with
 * the printed password; `sample`'s writer keeps making points; `sample-2` waits
 * unprotected, and enabling it with a manual install gets its agent installed by the
 * quickstart. A second quickstart on the same directory is refused. SIGTERM stops
 * everything (exit 0, no process of the directory left); the next start resumes the
 * same vault, items and points, and makes new points.
 *
 * Points are read straight from the store with the quickstart's passphrase (as
 * `lifeboat point list` would), so the test does not depend on the vault's own view.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ReplicatedItem } from '../../src/core/model.js';
import { pointCapturedAt } from '../../src/format/manifest.js';
import { openStorage } from '../../src/storage/registry.js';
import { Repository } from '../../src/store/repository.js';
import { makeTempDir } from '../helpers/env.js';
import { QuickstartRun as Run, waitFor, type QuickstartReady as Ready } from '../helpers/quickstart.js';

async function call<T>(url: string, token: string, method = 'GET', body?: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as T };
}

/** The point ids of the item's disk `sda` in the quickstart's store, with their capture times. */
async function storePoints(dir: string, itemId: string): Promise<{ pointId: string; capturedAtMs: number }[]> {
  const storage = await openStorage(`file://${join(dir, 'store')}`);
  try {
    const repo = await Repository.open(storage, readFileSync(join(dir, 'store-passphrase'), 'utf8').trim());
    return (await repo.listPoints(`${itemId}.sda`)).map((m) => ({ pointId: m.pointId, capturedAtMs: Date.parse(pointCapturedAt(m)) }));
  } finally {
    await storage.close();
  }
}

/** Processes (other than this test) whose command line names `dir`: a QEMU or a quickstart left behind. */
function processesOf(dir: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(dir) && Number(pid) !== process.pid) out.push(`${pid}: ${cmd}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('lifeboat quickstart', () => {
  const tmp = makeTempDir('quickstart');
  const dir = join(tmp.path, 'qs');
  const args = ['--dir', dir, '--listen', '127.0.0.1:0', '--compute', 'export', '--json'];
  const runs: Run[] = [];
  after(async () => {
    for (const r of runs) await r.stop();
    tmp.cleanup();
  });

  let first: Ready;
  let token: string;
  const ids: Record<string, string> = {};
  const pointsBefore: string[] = [];

  it('first start: prints one ready line once sample is protected and the drill ran; the portal answers and admin signs in', async () => {
    const run = new Run(args);
    runs.push(run);
    first = await run.ready();
    assert.equal(run.stdout.trim().split('\n').length, 1, `only the ready line on stdout:\n${run.stdout}`);
    assert.equal(first.user, 'admin');
    assert.equal(first.dir, dir);
    assert.equal(first.computeDriver, 'export');
    const sample = first.items.find((i) => i.machine === 'sample');
    assert.equal(sample?.state, 'protected', JSON.stringify(first.items));
    assert.equal(first.items.find((i) => i.machine === 'sample-2'), undefined, 'sample-2 is not protected');
    for (const f of ['store-passphrase', 'store-recovery-key', 'admin-password', 'admin-token']) {
      assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is private`);
    }
    assert.ok(!run.stderr.includes(readFileSync(join(dir, 'admin-password'), 'utf8').trim()), 'the password is not on stderr');

    const page = await fetch(first.url);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await page.text(), /<div id="root"|<script/);

    assert.equal(typeof first.password, 'string', 'the ready line carries the admin password');
    assert.equal(first.password, readFileSync(join(dir, 'admin-password'), 'utf8').trim());
    const session = await fetch(new URL('/api/v1/sessions', first.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'admin', password: first.password }),
    });
    assert.equal(session.status, 201, await session.clone().text());
    token = ((await session.json()) as { token: string }).token;
    const me = await call<{ user: { name: string } | null; role: string }>(new URL('/api/v1/me', first.url).href, token);
    assert.equal(me.status, 200);
    assert.equal(me.json.user?.name, 'admin');
    assert.equal(me.json.role, 'owner');
    const wrong = await fetch(new URL('/api/v1/sessions', first.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'admin', password: 'not-the-password' }) });
    assert.equal(wrong.status, 401);
    ids['sample'] = (sample as { id: string }).id;
  });

  it("sample's writer keeps its disk changing: a new point follows the first", async () => {
    const before = await storePoints(dir, ids['sample'] as string);
    assert.ok(before.length >= 1, 'at least one point');
    const newest = Math.max(...before.map((p) => p.capturedAtMs));
    const later = await waitFor('a newer point of sample', 90_000, async () => {
      const now = await storePoints(dir, ids['sample'] as string);
      return now.find((p) => p.capturedAtMs > newest);
    });
    assert.ok(!before.some((p) => p.pointId === later.pointId));
    // The writer is at work: the image's bytes change from one second to the next.
    const image = join(dir, 'machines', 'sample', 'disk.img');
    const digest = (): string => createHash('sha256').update(readFileSync(image)).digest('hex');
    const was = digest();
    await waitFor('the sample disk to change', 10_000, async () => (digest() !== was ? true : undefined));
    const drills = await call<{ items: { outcome: string }[] }>(new URL(`/api/v1/items/${ids['sample']}/drill-reports`, first.url).href, token);
    assert.deepEqual(drills.json.items.map((r) => r.outcome), ['passed'], 'the first start ran one drill');
  });

  it('a second quickstart on the same directory is refused with a clear message', async () => {
    const second = new Run(args);
    runs.push(second);
    const { code } = await second.exited;
    assert.notEqual(code, 0);
    assert.match(second.stderr, /another quickstart \(pid \d+\) is running on /);
    const doc = JSON.parse(second.stdout) as { error: { code: string } };
    assert.equal(doc.error.code, 'CONFLICT', 'one JSON error document');
    const health = await fetch(new URL('/healthz', first.url));
    assert.equal(health.status, 200, 'the first quickstart still runs');
  });

  it('sample-2 waits unprotected; Enable replication with a manual install gets it protected', async () => {
    const state = JSON.parse(readFileSync(join(dir, 'quickstart.json'), 'utf8')) as { vaultId: string; policyId: string; configServerId: string; machines: Record<string, string> };
    const machineId = state.machines['sample-2'] as string;
    const machine = await call<{ name: string }>(new URL(`/api/v1/machines/${machineId}`, first.url).href, token);
    assert.equal(machine.json.name, 'sample-2');
    const items = await call<{ items: ReplicatedItem[] }>(new URL('/api/v1/items', first.url).href, token);
    assert.equal(items.json.items.filter((i) => i.machineId === machineId).length, 0, 'no item for sample-2 yet');
    const enabled = await call<{ items: ReplicatedItem[] }>(new URL('/api/v1/replication/enable', first.url).href, token, 'POST', {
      vaultId: state.vaultId,
      policyId: state.policyId,
      configServerId: state.configServerId,
      install: 'manual',
      machines: [machineId],
    });
    assert.equal(enabled.status, 202, JSON.stringify(enabled.json));
    const itemId = (enabled.json.items[0] as ReplicatedItem).id;
    ids['sample-2'] = itemId;
    const item = await waitFor('sample-2 to be protected', 120_000, async () => {
      const i = await call<ReplicatedItem>(new URL(`/api/v1/items/${itemId}`, first.url).href, token);
      return i.json.state === 'protected' ? i.json : undefined;
    });
    assert.equal(item.state, 'protected');
    const agent = await call<{ hostname: string }>(new URL(`/api/v1/items/${itemId}/agent`, first.url).href, token);
    assert.equal(agent.status, 200, 'an agent enrolled for sample-2');
    assert.ok((await storePoints(dir, itemId)).length >= 1, 'sample-2 has a point in the store');
    for (const p of await storePoints(dir, ids['sample'] as string)) pointsBefore.push(p.pointId);
  });

  it('SIGTERM stops it cleanly (exit 0, nothing of the directory left running); the next start resumes the same vault, items and points and makes new points', async () => {
    const run = runs[0] as Run;
    const stopped = await run.stop();
    assert.deepEqual(stopped, { code: 0, signal: null }, run.stderr);
    assert.deepEqual(processesOf(dir), [], 'no QEMU, agent or quickstart of the directory is left');

    const restartedMs = Date.now();
    const again = new Run(args);
    runs.push(again);
    const ready = await again.ready();
    assert.notEqual(ready.url, '', 'a URL');
    assert.equal(ready.password, first.password, 'the same password');
    assert.deepEqual(
      ready.items.map((i) => [i.machine, i.id]).sort(),
      [
        ['sample', ids['sample']],
        ['sample-2', ids['sample-2']],
      ],
      'the same items',
    );
    // The old session token is still valid: the same vault (its database), not a new one.
    const me = await call<{ user: { name: string } | null }>(new URL('/api/v1/me', ready.url).href, token);
    assert.equal(me.status, 200);
    const vaults = await call<{ items: { id: string; name: string }[] }>(new URL('/api/v1/vaults', ready.url).href, token);
    const state = JSON.parse(readFileSync(join(dir, 'quickstart.json'), 'utf8')) as { vaultId: string };
    assert.deepEqual(vaults.json.items.map((v) => [v.id, v.name]), [[state.vaultId, 'local']]);
    const points = await storePoints(dir, ids['sample'] as string);
    for (const id of pointsBefore) assert.ok(points.some((p) => p.pointId === id), `point ${id} from before the restart is kept`);
    await waitFor('a point of sample after the restart', 90_000, async () => ((await storePoints(dir, ids['sample'] as string)).some((p) => p.capturedAtMs >= restartedMs) ? true : undefined));
    // sample-2's agent resumed too.
    await waitFor('a point of sample-2 after the restart', 90_000, async () => ((await storePoints(dir, ids['sample-2'] as string)).some((p) => p.capturedAtMs >= restartedMs) ? true : undefined));
    const stoppedAgain = await again.stop();
    assert.deepEqual(stoppedAgain, { code: 0, signal: null }, again.stderr);
    assert.deepEqual(processesOf(dir), []);
  });
});
