/**
 * The portal's replicated items, in Debian's Chromium against a vault with the fake
 * compute driver (test/vault/recovery/harness.ts): the list with state and health, the
 * detail page (disks, points, RPO chart, compute settings), and the recovery actions
 * driven through their dialogs — a test failover at a chosen point followed to its job,
 * its cleanup with notes in the drill report, refusals shown as sentences, and no
 * action at all for a reader.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { DrillReport, Job, ReplicatedItem } from '../../src/core/model.js';
import type { PointManifest } from '../../src/format/manifest.js';
import { DbTokens } from '../../src/vault/services/db-services.js';
import { launchBrowser, openPortal, saveScreenshot } from '../helpers/browser.js';
import { waitFor } from '../vault/replication/harness.js';
import { startRecoveryVault, type RecoveryVault } from '../vault/recovery/harness.js';

const MIN = 60_000;

/** A datetime-local value in this process's time zone (the browser's: both run here). */
function localInput(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

describe('portal: replicated items', () => {
  let v: RecoveryVault;
  let browser: Browser;
  let operator: string;
  let reader: string;
  let p1: PointManifest[];
  let t0: number;

  const tokenFor = async (role: 'operator' | 'reader'): Promise<string> => {
    const user = await v.call('POST', '/api/v1/users', { name: `${role}-user`, role });
    assert.equal(user.status, 201, user.text);
    return (await new DbTokens(v.server.repos, () => new Date()).create({ userId: String(user.json.id), name: `${role} token`, expiresAt: null })).secret;
  };
  const item = async (): Promise<ReplicatedItem> => (await v.call('GET', `/api/v1/items/${v.item.id}`)).json as unknown as ReplicatedItem;
  const open = async (token: string, path: string): Promise<{ page: Page; problems: string[] }> => openPortal(browser, `${v.server.url}/#${path}`, token);
  /** Console errors other than the refusals a test provokes on purpose. */
  const unexpected = (problems: string[]) => problems.filter((p) => !/the server responded with a status of (404|409)/.test(p));

  before(async () => {
    v = await startRecoveryVault('portal-items');
    t0 = Date.now();
    p1 = await v.pointsAt(t0 - 30 * MIN, 0x11);
    await v.pointsAt(t0 - 2 * MIN, 0x22);
    // A second machine whose initial replication is under way.
    const web = await v.server.repos.machines.get(v.item.machineId);
    const db = await v.server.repos.machines.create({ configServerId: web.configServerId, name: 'db', privateIp: '10.0.0.10', os: 'ubuntu-22.04', supported: true });
    const second = await v.server.repos.items.create({
      vaultId: v.item.vaultId,
      machineId: db.id,
      policyId: v.item.policyId,
      state: 'initial-replication',
      compute: { targetName: 'db', size: 'small', network: null, subnet: null, ip: null },
      disks: [{ name: 'sda', sizeBytes: 2 ** 30 }],
    });
    await v.server.repos.items.update(second.id, { initialReplicationPercent: 42 });
    operator = await tokenFor('operator');
    reader = await tokenFor('reader');
    // RPO samples over the last three hours, as the sampler would have written them.
    await v.server.repos.rpoSamples.append(
      [180, 120, 60, 1].map((minutesAgo, i) => ({ itemId: v.item.id, at: new Date(t0 - minutesAgo * MIN).toISOString(), rpoSeconds: [40, 700, 90, 65][i]! })),
    );
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await v?.stop();
  });

  it('the list shows the item with its machine, state, health and RPO, and filters by state and name', async () => {
    const { page, problems } = await open(reader, '/items');
    const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: 'web', exact: true }) });
    await row.waitFor();
    const text = await row.innerText();
    assert.match(text, /10\.0\.0\.9/);
    assert.match(text, /debian-12/);
    assert.match(text, /protected/);
    assert.match(text, /healthy/);
    assert.equal(await row.getByRole('link', { name: 'web', exact: true }).getAttribute('href'), `#/items/${v.item.id}`);
    const dbRow = page.getByRole('row').filter({ has: page.getByRole('link', { name: 'db', exact: true }) });
    assert.match(await dbRow.innerText(), /initial-replication/);
    assert.equal(await dbRow.getByRole('progressbar', { name: 'Initial replication of db' }).getAttribute('aria-valuenow'), '42');
    await saveScreenshot(page, 'items');

    await page.getByLabel('State').selectOption('failed-over');
    await page.getByText('0 of 2 replicated items').waitFor();
    assert.equal(await row.count(), 0);
    await page.getByLabel('State').selectOption('protected');
    await page.getByText('1 of 2 replicated items').waitFor();
    assert.equal(await row.count(), 1);
    assert.equal(await dbRow.count(), 0);
    await page.getByLabel('State').selectOption('');
    await page.getByLabel('Machine name contains').fill('nomatch');
    await page.getByText('0 of 2 replicated items').waitFor();
    await page.getByLabel('Machine name contains').fill('WE');
    await page.getByText('1 of 2 replicated items').waitFor();
    assert.equal(await row.count(), 1);
    assert.deepEqual(unexpected(problems), []);
    await page.context().close();
  });

  it('the detail page shows both disks, the latest points per disk and the RPO chart', async () => {
    const { page, problems } = await open(reader, `/items/${v.item.id}`);
    await page.getByRole('heading', { name: 'web', level: 1 }).waitFor();
    await page.getByText('No agent has enrolled for this machine yet.').waitFor();
    const disks = page.getByRole('region', { name: 'Disks' });
    await disks.getByRole('rowheader', { name: 'sda' }).waitFor();
    assert.match(await disks.innerText(), /sda\s+64\.0 KiB[\s\S]*sdb\s+64\.0 KiB/);

    const points = page.getByRole('region', { name: 'Recovery points' });
    const latest = points.getByRole('table', { name: 'Latest processed' });
    await latest.waitFor();
    for (const disk of ['sda', 'sdb']) await latest.getByRole('rowheader', { name: disk, exact: true }).waitFor();
    const latestText = await latest.innerText();
    const captured = new Date(t0 - 2 * MIN).toLocaleString();
    assert.equal((latestText.match(new RegExp(captured.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'g')) ?? []).length, 2, latestText);
    const recent = points.getByRole('table', { name: 'Recent points' });
    assert.equal(await recent.getByRole('row').count(), 1 + 4, 'a header and the four points');

    const chart = page.getByRole('img', { name: /^RPO over 4 samples/ });
    await chart.waitFor();
    const label = (await chart.getAttribute('aria-label')) ?? '';
    assert.match(label, /minimum 40 s, maximum 11 min 40 s, latest 1 min 5 s; threshold 10 min 0 s/);
    assert.equal(await chart.evaluate((el) => el.tagName.toLowerCase()), 'svg');
    assert.equal(await chart.locator('line[stroke-dasharray]').count(), 1, 'the threshold is a dashed line');
    await page.getByRole('radio', { name: '1 h' }).check();
    await page.getByRole('img', { name: /^RPO over 1 samples/ }).waitFor();
    assert.deepEqual(unexpected(problems), []);
    await page.context().close();
  });

  it('a reader sees no action and no edit button', async () => {
    const { page, problems } = await open(reader, `/items/${v.item.id}`);
    await page.getByRole('region', { name: 'Compute and network' }).waitFor();
    await page.getByRole('region', { name: 'Disks' }).getByRole('rowheader', { name: 'sda' }).waitFor();
    for (const name of ['Test failover', 'Failover', 'Pause replication', 'Resume replication', 'Edit compute settings']) {
      assert.equal(await page.getByRole('button', { name, exact: true }).count(), 0, name);
    }
    assert.equal(await page.getByRole('region', { name: 'Actions' }).count(), 0);
    assert.deepEqual(unexpected(problems), []);
    await page.context().close();
  });

  it('compute settings are edited and saved; an invalid IP is a readable message', async () => {
    const { page, problems } = await open(v.token, `/items/${v.item.id}`);
    const compute = page.getByRole('region', { name: 'Compute and network' });
    await compute.getByRole('button', { name: 'Edit compute settings' }).click();
    await compute.getByLabel('Size', { exact: true }).fill('large');
    await compute.getByLabel('IP address', { exact: true }).fill('999.1.1.1');
    await compute.getByRole('button', { name: 'Save compute settings' }).click();
    const alert = compute.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /ip: must be an IPv4 or IPv6 address/);
    assert.doesNotMatch(await alert.innerText(), /[{}]/, 'no raw JSON');
    assert.equal((await item()).compute.size, 'small', 'nothing changed');

    await compute.getByLabel('IP address', { exact: true }).fill('10.0.0.50');
    await compute.getByLabel('Network', { exact: true }).fill('bridge:br0');
    await compute.getByRole('button', { name: 'Save compute settings' }).click();
    await compute.getByRole('status').filter({ hasText: 'Compute settings saved' }).waitFor();
    assert.deepEqual((await item()).compute, { targetName: 'web', size: 'large', network: 'bridge:br0', subnet: null, ip: '10.0.0.50' });
    await compute.getByText('10.0.0.50').waitFor();
    assert.deepEqual(unexpected(problems).filter((p) => !p.includes('400')), []);
    // Back to the default network: the drills below run in the isolated network either way.
    assert.equal((await v.call('PATCH', `/api/v1/items/${v.item.id}/compute`, { network: null })).status, 200);
    await page.context().close();
  });

  it('refusals are sentences in the dialog: a time before the first point, a state changed under the page', async () => {
    const { page, problems } = await open(operator, `/items/${v.item.id}`);
    await page.getByRole('button', { name: 'Test failover', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'Test failover' });
    await dialog.getByRole('radio', { name: 'The newest point at or before a time' }).check();
    await dialog.getByLabel('Time (your local time)').fill(localInput(t0 - 60 * MIN));
    await dialog.getByRole('button', { name: 'Start test failover' }).click();
    const alert = dialog.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /It no longer exists|captured at or before/);
    assert.doesNotMatch(await alert.innerText(), /[{}]/);
    assert.equal((await item()).state, 'protected', 'nothing started');
    await dialog.getByRole('button', { name: 'Cancel' }).click();

    // The page keeps showing "protected" (its refreshes are held) while a drill starts elsewhere.
    const held: (() => Promise<void>)[] = [];
    await page.route(`**/api/v1/items/${v.item.id}`, (route) => {
      held.push(() => route.continue().catch(() => undefined));
    });
    const elsewhere = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, {});
    assert.equal(elsewhere.status, 202, elsewhere.text);
    await page.getByRole('button', { name: 'Test failover', exact: true }).click();
    await dialog.getByRole('button', { name: 'Start test failover' }).click();
    await alert.waitFor();
    const refused = await alert.innerText();
    assert.match(refused, /not possible in the current state/);
    assert.match(refused, /test-failover/);
    assert.doesNotMatch(refused, /[{}]/);
    await page.unroute(`**/api/v1/items/${v.item.id}`);
    for (const go of held) await go();
    assert.equal((await v.waitJob(String(elsewhere.json.id))).state, 'succeeded');
    const cleanup = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover/cleanup`, {});
    assert.equal((await v.waitJob(String(cleanup.json.id))).state, 'succeeded');
    assert.equal((await item()).state, 'protected');
    assert.deepEqual(unexpected(problems), []);
    await page.context().close();
  });

  it('an operator runs a test failover at a chosen point, follows its job, and cleans it up with notes', async () => {
    const { page, problems } = await open(operator, `/items/${v.item.id}`);
    await page.getByRole('button', { name: 'Test failover', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'Test failover' });
    assert.match(await dialog.innerText(), /isolated network/);
    await dialog.getByRole('radio', { name: 'A specific point' }).check();
    await dialog.getByLabel('Point', { exact: true }).selectOption(p1[1]!.pointId);
    await dialog.getByRole('button', { name: 'Start test failover' }).click();
    const notice = page.getByRole('status').filter({ hasText: 'Test failover started' });
    await notice.waitFor();
    const href = (await notice.getByRole('link').getAttribute('href')) ?? '';
    const jobId = /^#\/jobs\/(\w+)$/.exec(href)?.[1];
    assert.ok(jobId, href);
    const job: Job = await waitFor(
      `job ${jobId} to end`,
      async () => {
        const j = (await v.call('GET', `/api/v1/jobs/${jobId}`)).json as unknown as Job;
        return ['succeeded', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
      },
      20_000,
    );
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.equal(job.kind, 'test-failover');
    assert.equal((await item()).state, 'test-failover');
    const reports = (await v.call('GET', `/api/v1/items/${v.item.id}/drill-reports`)).json.items as DrillReport[];
    assert.deepEqual(
      reports.find((r) => r.jobId === jobId)?.point?.disks.map((d) => d.pointId),
      [p1[0]!.pointId, p1[1]!.pointId],
      'the point chosen in the dialog',
    );
    await page.getByRole('region', { name: 'Recent jobs' }).getByRole('link', { name: 'Test failover', exact: true }).first().waitFor();
    await page.getByRole('region', { name: 'Status' }).getByText('test-failover', { exact: true }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Test failover', exact: true }).count(), 0, 'no second drill is offered');

    await page.getByRole('button', { name: 'Cleanup test failover' }).click();
    const cleanup = page.getByRole('dialog', { name: 'Clean up the test failover' });
    await cleanup.getByLabel('Notes').fill('drill from the portal: boots fine');
    await cleanup.getByRole('button', { name: 'Clean up' }).click();
    const cleanupNotice = page.getByRole('status').filter({ hasText: 'Cleanup of the test failover started' });
    await cleanupNotice.waitFor();
    const cleanupId = /#\/jobs\/(\w+)$/.exec((await cleanupNotice.getByRole('link').getAttribute('href')) ?? '')?.[1];
    assert.ok(cleanupId);
    assert.equal((await v.waitJob(cleanupId)).state, 'succeeded');
    const [report] = (await v.call('GET', `/api/v1/items/${v.item.id}/drill-reports`)).json.items as DrillReport[];
    assert.equal(report?.jobId, jobId);
    // The vault puts its own remark (no drill settings) before the operator's notes.
    assert.match(String(report?.notes), /(^|\n)drill from the portal: boots fine$/);
    assert.equal((await item()).state, 'protected');
    const drills = page.getByRole('region', { name: 'Drill reports' });
    await drills.getByText('drill from the portal: boots fine').waitFor();
    await page.getByRole('button', { name: 'Test failover', exact: true }).waitFor();
    await saveScreenshot(page, 'item-detail');
    assert.deepEqual(unexpected(problems), []);
    await page.context().close();
  });

  it('pause, resume and the bandwidth limit show the state the vault keeps and answer with what the agent will do', async () => {
    const { page, problems } = await open(operator, `/items/${v.item.id}`);
    const control = async () => (await v.call('GET', `/api/v1/items/${v.item.id}/replication-control`)).json;
    await page.getByText('Running; bandwidth not limited.').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Resume replication' }).count(), 0, 'nothing to resume while running');
    await page.getByRole('button', { name: 'Pause replication' }).click();
    await page.getByRole('status').filter({ hasText: 'Replication is paused' }).waitFor();
    await page.getByText('Paused; bandwidth not limited.').waitFor();
    assert.equal((await control()).paused, true);
    await page.getByLabel('Bandwidth limit (Mbit/s, 0 = none)').fill('8');
    await page.getByRole('button', { name: 'Set bandwidth limit' }).click();
    await page.getByText('Paused; bandwidth limited to 8 Mbit/s.').waitFor();
    assert.equal((await control()).throttleBytesPerSec, 1_000_000);
    await page.getByRole('button', { name: 'Resume replication' }).click();
    await page.getByRole('status').filter({ hasText: 'Replication runs' }).waitFor();
    await page.getByLabel('Bandwidth limit (Mbit/s, 0 = none)').fill('0');
    await page.getByRole('button', { name: 'Set bandwidth limit' }).click();
    await page.getByText('Running; bandwidth not limited.').waitFor();
    assert.deepEqual(await control(), { itemId: v.item.id, paused: false, throttleBytesPerSec: 0 });
    assert.deepEqual(unexpected(problems), []);
    await page.context().close();
  });
  it('failover through its warning dialog (keyboard too), then a change of recovery point and commit', async () => {
    const { page, problems } = await open(operator, `/items/${v.item.id}`);
    const button = page.getByRole('button', { name: 'Failover', exact: true });
    await button.focus();
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog', { name: 'Failover' });
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /Production moves to the replica/);
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal((await item()).state, 'protected', 'Escape starts nothing');

    await button.click();
    await dialog.getByRole('checkbox', { name: 'Shut down the source machine first' }).check();
    await dialog.getByRole('button', { name: 'Fail over' }).click();
    const notice = page.getByRole('status').filter({ hasText: 'Failover started' });
    await notice.waitFor();
    const failoverId = /#\/jobs\/(\w+)$/.exec((await notice.getByRole('link').getAttribute('href')) ?? '')?.[1];
    assert.ok(failoverId);
    const failover = await v.waitJob(failoverId);
    assert.equal(failover.state, 'succeeded', JSON.stringify(failover));
    // The checkbox reached the vault: without an agent or push account the optional shutdown step fails and says why.
    const shutdown = failover.steps.find((st) => st.name === 'Shut down the source machine');
    assert.equal(shutdown?.state, 'failed', JSON.stringify(failover.steps));
    assert.equal((await item()).state, 'failed-over');

    await page.getByRole('button', { name: 'Change recovery point' }).click();
    const change = page.getByRole('dialog', { name: 'Change the recovery point' });
    await change.getByRole('radio', { name: 'A specific point' }).check();
    await change.getByLabel('Point', { exact: true }).selectOption(p1[0]!.pointId);
    await change.getByRole('button', { name: 'Change point' }).click();
    const changeNotice = page.getByRole('status').filter({ hasText: 'Change of recovery point started' });
    await changeNotice.waitFor();
    const changeId = /#\/jobs\/(\w+)$/.exec((await changeNotice.getByRole('link').getAttribute('href')) ?? '')?.[1];
    assert.ok(changeId);
    assert.equal((await v.waitJob(changeId)).state, 'succeeded');
    const [replica] = (await v.call('GET', `/api/v1/items/${v.item.id}/recovered-machines`)).json.items as { point: { disks: { pointId: string }[] } }[];
    assert.deepEqual(
      replica?.point.disks.map((d) => d.pointId),
      p1.map((p) => p.pointId),
    );

    await page.getByRole('button', { name: 'Commit', exact: true }).click();
    await page.getByRole('dialog', { name: 'Commit the failover' }).getByRole('button', { name: 'Commit', exact: true }).click();
    const commitNotice = page.getByRole('status').filter({ hasText: 'Commit started' });
    await commitNotice.waitFor();
    const commitId = /#\/jobs\/(\w+)$/.exec((await commitNotice.getByRole('link').getAttribute('href')) ?? '')?.[1];
    assert.ok(commitId);
    assert.equal((await v.waitJob(commitId)).state, 'succeeded');
    await page.getByRole('region', { name: 'Status' }).getByText('committed', { exact: true }).waitFor();
    await page.getByRole('button', { name: 'Reprotect' }).waitFor();
    for (const name of ['Test failover', 'Failover', 'Change recovery point', 'Commit', 'Pause replication']) {
      assert.equal(await page.getByRole('button', { name, exact: true }).count(), 0, `${name} is not offered once committed`);
    }
    assert.deepEqual(unexpected(problems), []);
    await page.context().close();
  });
});
