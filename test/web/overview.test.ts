import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { ItemState } from '../../src/core/model.js';
import { launchBrowser, openPortal, saveScreenshot } from '../helpers/browser.js';
import { startLiveVault, type LiveVault } from '../vault/api/harness.js';

let vault: LiveVault;
let browser: Browser;
const ids: Record<string, string> = {};
let echoJobId: string;

const DAY_MS = 24 * 3600 * 1000;

before(async () => {
  vault = await startLiveVault('portal-overview');
  browser = await launchBrowser();
  const { vaultId, serverId } = await vault.registerServer();
  const repos = vault.server.repos;
  const policy = await repos.policies.create({
    vaultId,
    name: 'minute',
    rpoThresholdSeconds: 60,
    retentionHours: 24,
    appConsistentFrequencyMinutes: 0,
    crashConsistentFrequencySeconds: 5,
  });
  const seed = async (name: string, state: ItemState, rpoSeconds: number | null, initialReplicationPercent = 100) => {
    const m = await repos.machines.create({ configServerId: serverId, name, privateIp: '10.0.1.1', os: 'debian-12', supported: true });
    const created = await repos.items.create({
      vaultId,
      machineId: m.id,
      policyId: policy.id,
      state,
      compute: { targetName: `t-${name}`, size: 'small', network: null, subnet: null, ip: null },
      disks: [],
    });
    ids[name] = (await repos.items.update(created.id, { rpoSeconds, initialReplicationPercent })).id;
  };
  await seed('alpha', 'protected', 12);
  await seed('bravo', 'protected', 300);
  await seed('charlie', 'initial-replication', null, 42);
  await seed('delta', 'protected', 10);
  const drill = async (name: string, daysAgo: number) => {
    const at = new Date(Date.now() - daysAgo * DAY_MS).toISOString();
    await repos.drillReports.create({
      itemId: ids[name]!,
      planId: null,
      operation: 'test-failover',
      trigger: 'operator',
      jobId: `job-${name}-${daysAgo}`,
      cleanupJobId: null,
      outcome: 'passed',
      point: null,
      rpoSeconds: 3,
      rtoSeconds: 20,
      driver: 'fake',
      network: 'isolated',
      machineId: null,
      accel: null,
      probes: [],
      consoleLog: '',
      error: null,
      notes: null,
      startedAt: at,
      endedAt: at,
    });
  };
  await drill('alpha', 40);
  await drill('delta', 2);
  // A real "Enable protection" job, through the API.
  const echo = await vault.call('POST', '/api/v1/machines', vault.ownerToken, { configServerId: serverId, name: 'echo', privateIp: '10.0.1.5', os: 'debian-12' });
  assert.equal(echo.status, 201, echo.text);
  const enabled = await vault.call('POST', '/api/v1/replication/enable', vault.ownerToken, {
    vaultId,
    policyId: policy.id,
    configServerId: serverId,
    install: 'manual',
    machines: [echo.json.id],
  });
  assert.equal(enabled.status, 202, enabled.text);
  ids.echo = (enabled.json.items as { id: string }[])[0]!.id;
  echoJobId = (enabled.json.jobs as { id: string }[])[0]!.id;
});

after(async () => {
  await browser?.close();
  await vault?.stop();
});

async function openOverview(token: string): Promise<{ page: Page; problems: string[] }> {
  const opened = await openPortal(browser, `${vault.server.url}/#/`, token);
  await opened.page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  await opened.page.getByRole('table', { name: 'Replicated items' }).waitFor();
  return opened;
}

function itemRow(page: Page, name: string) {
  return page.getByRole('table', { name: 'Replicated items' }).getByRole('row', { name: new RegExp(`^${name} `) });
}

test('the overview counts items by health and shows state, health, RPO against threshold and the latest drill', async () => {
  const { page, problems } = await openOverview(vault.ownerToken);
  const echoHealth = (await vault.call('GET', `/api/v1/items/${ids.echo}`, vault.ownerToken)).json.state === 'protected' ? 'healthy' : 'warning';
  await itemRow(page, 'bravo').getByText('critical', { exact: true }).waitFor();
  const cards = page.getByRole('group', { name: 'Replicated items by health' });
  const count = async (health: string) => Number((await cards.locator('.card', { hasText: health }).locator('.number').innerText()).trim());
  assert.equal(await count('critical'), 1);
  assert.equal(await count('healthy'), echoHealth === 'healthy' ? 4 : 3);
  assert.equal(await count('warning'), echoHealth === 'warning' ? 1 : 0);
  assert.equal(await count('initial-replication'), 1);

  const alpha = itemRow(page, 'alpha');
  assert.match(await alpha.innerText(), /protected[\s\S]*healthy[\s\S]*12 s \/ 1 min/);
  assert.equal(await alpha.getByRole('progressbar', { name: 'RPO against its threshold' }).getAttribute('aria-valuenow'), '20');
  assert.match(await alpha.innerText(), /passed[\s\S]*40 d 0 h ago/);
  assert.match(await itemRow(page, 'bravo').innerText(), /critical[\s\S]*5 min \/ 1 min/);
  assert.match(await itemRow(page, 'charlie').innerText(), /initial replication 42 %/);
  assert.equal(await itemRow(page, 'charlie').getByRole('progressbar').getAttribute('aria-valuenow'), '42');
  assert.match(await itemRow(page, 'delta').innerText(), /passed[\s\S]*2 d 0 h ago/);
  assert.match(await itemRow(page, 'echo').innerText(), /never/);
  assert.equal(await itemRow(page, 'alpha').getByRole('link', { name: 'alpha' }).getAttribute('href'), `#/items/${ids.alpha}`);
  assert.match(await page.getByText(/^updated \d\d:\d\d:\d\d$/).innerText(), /updated/);
  await page.getByRole('list', { name: 'Items to test' }).waitFor();
  await saveScreenshot(page, 'overview');
  assert.deepEqual(problems, []);
  await page.context().close();
});

test('open alerts (newest first, link to all), recent jobs with their links, and the items to test', async () => {
  const { page } = await openOverview(vault.ownerToken);
  // The vault's own evaluator raises bravo's RPO alert.
  const alerts = page.getByRole('table', { name: 'Newest open alerts' });
  await alerts.waitFor();
  // The evaluator may raise another alert (echo's job) between the page's load and ours: the page
  // must show the vault's newest open alert first once it has caught up (it refreshes every 5 s).
  let shown = '';
  let newest = '';
  for (let tries = 0; tries < 40; tries++) {
    const open = (await vault.call('GET', '/api/v1/alerts', vault.ownerToken)).json.items as { message: string; raisedAt: string }[];
    assert.ok(open.length >= 1);
    newest = [...open].sort((a, b) => (a.raisedAt < b.raisedAt ? 1 : a.raisedAt > b.raisedAt ? -1 : 0))[0]!.message; // ties keep id order, as on the page
    shown = await alerts.getByRole('row').nth(1).getByRole('cell').nth(2).innerText();
    if (shown === newest) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(shown, newest);
  assert.equal(await page.getByRole('link', { name: /^All alerts/ }).getAttribute('href'), '#/alerts');

  const jobs = page.getByRole('table', { name: 'Newest jobs' });
  const jobLink = jobs.getByRole('link', { name: 'Enable protection' });
  assert.equal(await jobLink.getAttribute('href'), `#/jobs/${echoJobId}`);
  assert.match(await jobs.getByRole('row', { name: /Enable protection/ }).innerText(), /echo[\s\S]*(queued|running|succeeded|failed)/);
  assert.equal(await jobs.getByRole('progressbar').count(), 1);

  const due = page.getByRole('list', { name: 'Items to test' });
  await due.waitFor();
  const texts = await due.getByRole('listitem').allInnerTexts();
  assert.equal(texts.length, 2, texts.join(' | '));
  assert.match(texts.find((t) => t.startsWith('alpha')) ?? '', /last passed drill 40 d 0 h ago/);
  assert.match(texts.find((t) => t.startsWith('bravo')) ?? '', /never passed a drill/);
  assert.equal(await due.getByRole('link', { name: 'bravo' }).getAttribute('href'), `#/items/${ids.bravo}`);
  await page.context().close();
});

test('the overview follows the vault without a reload, and the keyboard reaches an item link', async () => {
  const { page } = await openOverview(vault.ownerToken);
  await page.evaluate('window.__sameDocument = true');
  await itemRow(page, 'alpha').getByText('healthy', { exact: true }).waitFor();
  // alpha's RPO rises above 80 % of its threshold: a warning at the next refresh.
  await vault.server.repos.items.update(ids.alpha!, { rpoSeconds: 55 });
  await itemRow(page, 'alpha').getByText('warning', { exact: true }).waitFor({ timeout: 20_000 });
  assert.match(await itemRow(page, 'alpha').innerText(), /55 s \/ 1 min/);
  assert.equal(await page.evaluate('window.__sameDocument === true'), true, 'no reload');

  await page.getByRole('main').focus();
  let onLink = false;
  for (let i = 0; i < 30 && !onLink; i++) {
    await page.keyboard.press('Tab');
    onLink = (await page.locator('a:focus').count()) === 1 && (await page.locator('a:focus').innerText()) === 'alpha';
  }
  assert.ok(onLink, 'Tab reaches the link of an item');
  await page.keyboard.press('Enter');
  await page.waitForURL(new RegExp(`#/items/${ids.alpha}$`));
  await page.context().close();
});
