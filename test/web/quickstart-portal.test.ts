/**
 * The portal end to end, as a person meets it: `lifeboat quickstart` runs (its own
 * process, embedded defaults, compute `auto`: QEMU here), and Debian's Chromium signs in
 * with the printed login, creates a policy, enables replication of `sample-2` through the
 * guided flow, follows the Enable protection job and the initial replication to
 * "protected", runs a test failover from the item page and cleans it up with notes, and
 * reads the job's steps. The screenshots the README shows are taken here.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { DrillReport, Job, ReplicatedItem } from '../../src/core/model.js';
import { launchBrowser, openPortal, saveScreenshot } from '../helpers/browser.js';
import { QuickstartRun, waitFor, type QuickstartReady } from '../helpers/quickstart.js';

/** Outside the checkout: the store's path is on the screenshots. */
let dir = '';
let run: QuickstartRun;
let ready: QuickstartReady;
let browser: Browser;
let page: Page;
let problems: string[];
let ownerToken = '';

async function api<T>(path: string, method = 'GET', body?: unknown): Promise<T> {
  const res = await fetch(ready.url.replace(/\/$/, '') + path, {
    method,
    headers: { authorization: `Bearer ${ownerToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

async function nav(label: string): Promise<void> {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: label, exact: true }).click();
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lifeboat-'));
  run = new QuickstartRun(['--dir', join(dir, 'quickstart'), '--listen', '127.0.0.1:0', '--no-drill', '--json']);
  ready = await run.ready();
  assert.ok(ready.password, 'the first start prints the admin password');
  const session = await fetch(`${ready.url.replace(/\/$/, '')}/api/v1/sessions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: ready.user, password: ready.password }),
  });
  ownerToken = ((await session.json()) as { token: string }).token;
  browser = await launchBrowser();
});

after(async () => {
  await page?.context().close();
  await browser?.close();
  await run?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('sign in with the login the quickstart printed; a wrong password is a readable message', async () => {
  ({ page, problems } = await openPortal(browser, ready.url));
  await page.getByLabel('User name').fill(ready.user);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /sign-in details are wrong/);
  assert.doesNotMatch(await alert.innerText(), /[{}"]/, 'no raw JSON');
  await page.getByLabel('Password').fill(ready.password as string);
  // Keyboard: Enter in the password field submits the form.
  await page.getByLabel('Password').press('Enter');
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  // The sample machine the quickstart protected is on the overview.
  await page.getByRole('link', { name: 'sample', exact: true }).first().waitFor();
  await saveScreenshot(page, 'portal-overview');
});

test('create a policy through the form', async () => {
  await nav('Policies');
  const form = page.getByRole('form', { name: 'Create policy' });
  await form.getByLabel('Name').fill('portal-made');
  await form.getByLabel('RPO threshold (minutes)').fill('5');
  await form.getByLabel('Recovery point retention (hours)').fill('24');
  await form.getByLabel('App-consistent snapshot frequency (minutes)').fill('0');
  await form.getByLabel('Crash-consistent frequency (seconds)').fill('10');
  await form.getByRole('button', { name: 'Create policy' }).click();
  await page.getByRole('row', { name: /portal-made/ }).waitFor();
  const policies = await api<{ items: { name: string; rpoThresholdSeconds: number; crashConsistentFrequencySeconds: number }[] }>('/api/v1/policies');
  const made = policies.items.find((p) => p.name === 'portal-made');
  assert.deepEqual(made && [made.rpoThresholdSeconds, made.crashConsistentFrequencySeconds], [300, 10]);
  await saveScreenshot(page, 'portal-policies');
});

let itemId = '';

test('enable replication of sample-2 with the guided flow, then follow its job and the initial replication to protected', async () => {
  await nav('Enable replication');
  const step = (name: string) => page.getByRole('group', { name: new RegExp(`^Step \\d+ of 10: ${name}$`) }).waitFor();
  const next = () => page.getByRole('button', { name: 'Next' }).click();
  await step('Source');
  await page.getByLabel('Vault').selectOption({ index: 1 });
  await page.getByLabel('Configuration server').selectOption({ index: 1 });
  for (let i = 0; i < 6; i++) await next(); // machine type, process server, target, storage, network: the defaults
  await page.getByRole('checkbox', { name: 'Select sample-2' }).waitFor();
  assert.equal(await page.getByRole('checkbox', { name: 'Select sample', exact: true }).isDisabled(), true, 'sample is already protected');
  await page.getByRole('checkbox', { name: 'Select sample-2' }).check();
  await saveScreenshot(page, 'portal-enable-replication');
  await next();
  await page.getByRole('radio', { name: 'I install the agent myself (manual)' }).check();
  await next();
  await page.getByLabel('Replication policy').selectOption({ label: 'portal-made' });
  await next();
  await page.getByRole('button', { name: 'Enable replication' }).click();
  await page.getByRole('heading', { name: 'Replication enabled' }).waitFor();

  // The job page updates itself: a marker set now must survive until the job ends.
  await page.getByRole('link', { name: 'Enable protection job of sample-2' }).click();
  await page.getByRole('heading', { name: 'Enable protection', level: 1 }).waitFor();
  await page.evaluate('window.__stillTheSamePage = true');
  const steps = page.getByRole('list', { name: 'Steps' }).getByRole('listitem');
  assert.deepEqual(
    (await steps.allInnerTexts()).map((t) => t.split('\n').find((l) => /[a-z]{3}/.test(l) && !/^(queued|running|succeeded|failed)$/.test(l.trim()))?.trim()),
    ['Prerequisites check', 'Identify the target', 'Install the mobility service', 'Enable replication', 'Start initial replication'],
  );
  await page.getByRole('status', { name: 'Updates: ended' }).waitFor({ timeout: 120_000 });
  assert.match(await page.getByRole('region', { name: 'Job' }).innerText(), /succeeded/);
  assert.equal(await page.evaluate('window.__stillTheSamePage'), true, 'the job page was never reloaded');
  assert.equal(await page.getByRole('img', { name: 'succeeded' }).count(), 5);
  await saveScreenshot(page, 'portal-job-enable-protection');

  // The item: initial replication with its progress bar, then protected and a recovery point.
  const items = await api<{ items: ReplicatedItem[] }>('/api/v1/items');
  const machines = await api<{ items: { id: string; name: string }[] }>('/api/v1/machines');
  const sample2 = machines.items.find((m) => m.name === 'sample-2');
  itemId = items.items.find((i) => i.machineId === sample2?.id)?.id ?? '';
  assert.ok(itemId, 'sample-2 has a replicated item');
  await page.getByRole('region', { name: 'Job' }).getByRole('link', { name: 'sample-2' }).click();
  await page.getByRole('heading', { name: 'sample-2', level: 1 }).waitFor();
  await page.getByRole('region', { name: 'Status' }).getByText('protected', { exact: true }).waitFor({ timeout: 240_000 });
  await page.getByRole('table', { name: 'Latest processed' }).getByRole('row').nth(1).waitFor({ timeout: 60_000 });
  const jobs = await api<{ items: Job[] }>(`/api/v1/jobs?itemId=${itemId}`);
  assert.ok(
    jobs.items.some((j) => j.kind === 'finalize-protection'),
    'initial replication ended with a Finalize protection job',
  );
});

test('test failover of sample-2 from its page, its job steps, then cleanup with notes', async () => {
  await page.getByRole('button', { name: 'Test failover', exact: true }).click();
  const dialog = page.getByRole('dialog', { name: 'Test failover' });
  await dialog.getByRole('radio', { name: /latest processed/i }).check();
  await dialog.getByRole('button', { name: 'Start test failover' }).click();
  const notice = page.getByRole('status').filter({ hasText: 'Test failover started' });
  await notice.waitFor();
  await notice.getByRole('link').click();
  await page.getByRole('heading', { name: 'Test failover', level: 1 }).waitFor();
  await page.getByRole('status', { name: 'Updates: ended' }).waitFor({ timeout: 240_000 });
  assert.match(await page.getByRole('region', { name: 'Job' }).innerText(), /succeeded/);
  const names = (await api<{ items: Job[] }>(`/api/v1/jobs?itemId=${itemId}`)).items.find((j) => j.kind === 'test-failover')?.steps.map((s) => s.name) ?? [];
  assert.ok(names.length >= 3);
  const shown = await page.getByRole('list', { name: 'Steps' }).innerText();
  let at = -1;
  for (const name of names) {
    const found = shown.indexOf(name, at + 1);
    assert.ok(found > at, `step "${name}" is listed, in order`);
    at = found;
  }
  await saveScreenshot(page, 'portal-job-test-failover');

  await page.getByRole('region', { name: 'Job' }).getByRole('link', { name: 'sample-2' }).click();
  await page.getByRole('region', { name: 'Status' }).getByText('test-failover', { exact: true }).waitFor();
  await saveScreenshot(page, 'portal-item-detail');
  await page.getByRole('button', { name: 'Cleanup test failover' }).click();
  const cleanup = page.getByRole('dialog', { name: 'Clean up the test failover' });
  await cleanup.getByLabel('Notes').fill('drill from the portal');
  await cleanup.getByRole('button', { name: 'Clean up' }).click();
  await page.getByRole('status').filter({ hasText: 'Cleanup of the test failover started' }).waitFor();
  await page.getByRole('region', { name: 'Status' }).getByText('protected', { exact: true }).waitFor({ timeout: 120_000 });
  const reports = await waitFor('the drill report with its notes', 30_000, async () => {
    const r = await api<{ items: DrillReport[] }>(`/api/v1/items/${itemId}/drill-reports`);
    return r.items[0]?.notes ? r.items : undefined;
  });
  assert.match(reports[0]?.notes ?? '', /drill from the portal$/);
  assert.equal(reports[0]?.outcome, 'passed');
});

test('infrastructure and jobs pages; the page raised no script error', async () => {
  await nav('Infrastructure');
  await page.getByRole('heading', { name: 'Infrastructure', level: 1 }).waitFor();
  await page.getByText('this-host').first().waitFor();
  // Refresh: the configuration server is asked to run discovery, and its next heartbeat answers.
  await page.getByRole('button', { name: 'Refresh this-host' }).click();
  await page.getByText('Refresh requested').first().waitFor();
  const servers = await api<{ items: { name: string; lastRefreshAt: string | null }[] }>('/api/v1/config-servers');
  assert.ok(servers.items.find((s) => s.name === 'this-host')?.lastRefreshAt, 'the refresh was recorded');
  await saveScreenshot(page, 'portal-infrastructure');
  await nav('Jobs');
  await page.getByRole('table').getByRole('link', { name: 'Cleanup test failover' }).first().waitFor();
  await saveScreenshot(page, 'portal-jobs');
  assert.deepEqual(
    problems.filter((p) => !/401|Unauthorized/.test(p)),
    [],
    'no script errors (the refused sign-in is the only failed request)',
  );
});
