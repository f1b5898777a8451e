import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser, openPortal, saveScreenshot } from '../helpers/browser.js';
import { startLiveVault, type LiveVault } from '../vault/api/harness.js';

let vault: LiveVault;
let browser: Browser;
let vaultId: string;

interface PolicyRow {
  id: string;
  name: string;
  vaultId: string;
  rpoThresholdSeconds: number;
  retentionHours: number;
  appConsistentFrequencyMinutes: number;
  crashConsistentFrequencySeconds: number;
}

before(async () => {
  vault = await startLiveVault('portal-policies');
  browser = await launchBrowser();
  ({ vaultId } = await vault.registerServer());
});

after(async () => {
  await browser?.close();
  await vault?.stop();
});

/** The focused control, as a person would name it: a button's text or the text of the input's label. */
const FOCUSED_LABEL = `(() => {
  const el = document.activeElement;
  if (!el) return '';
  if (el.tagName === 'BUTTON') return 'button:' + el.textContent;
  const label = el.id ? document.querySelector('label[for="' + el.id + '"]') : null;
  return label ? label.textContent : el.getAttribute('aria-label') || el.tagName;
})()`;

async function policies(): Promise<PolicyRow[]> {
  const res = await vault.call('GET', '/api/v1/policies', vault.ownerToken);
  assert.equal(res.status, 200);
  return res.json.items as PolicyRow[];
}

async function openPolicies(token: string): Promise<{ page: Page; problems: string[] }> {
  const opened = await openPortal(browser, `${vault.server.url}/#/policies`, token);
  await opened.page.getByRole('heading', { name: 'Replication policies' }).waitFor();
  return opened;
}

test('a policy created through the form is in the table and in the API, in the units the form shows', async () => {
  const { page, problems } = await openPolicies(vault.ownerToken);
  const form = page.getByRole('form', { name: 'Create policy' });
  await form.getByLabel('Name').fill('gold');
  await form.getByLabel('RPO threshold (minutes)').fill('2');
  await form.getByLabel('Recovery point retention (hours)').fill('48');
  await form.getByLabel('App-consistent snapshot frequency (minutes)').fill('60');
  await form.getByLabel('Crash-consistent frequency (seconds)').fill('30');
  await form.getByRole('button', { name: 'Create policy' }).click();
  const row = page.getByRole('row', { name: /gold/ });
  await row.waitFor();
  assert.match(await row.innerText(), /2 min[\s\S]*48 h[\s\S]*1 h[\s\S]*30 s/);
  const gold = (await policies()).find((p) => p.name === 'gold');
  assert.deepEqual(
    gold && { vaultId: gold.vaultId, rpo: gold.rpoThresholdSeconds, ret: gold.retentionHours, app: gold.appConsistentFrequencyMinutes, crash: gold.crashConsistentFrequencySeconds },
    { vaultId, rpo: 120, ret: 48, app: 60, crash: 30 },
  );
  await saveScreenshot(page, 'policies');
  assert.deepEqual(problems, []);
  await page.context().close();
});

test('a value the API refuses is a readable field error and marks its input', async () => {
  const { page } = await openPolicies(vault.ownerToken);
  const form = page.getByRole('form', { name: 'Create policy' });
  await form.getByLabel('Name').fill('too-fast');
  await form.getByLabel('RPO threshold (minutes)').fill('0.1');
  await form.getByRole('button', { name: 'Create policy' }).click();
  const alert = form.getByRole('alert');
  await alert.waitFor();
  const text = await alert.innerText();
  assert.match(text, /rpo threshold seconds/i);
  assert.doesNotMatch(text, /[{}]/, 'no raw JSON');
  assert.equal(await form.getByLabel('RPO threshold (minutes)').getAttribute('aria-invalid'), 'true');
  assert.equal(await form.getByLabel('Recovery point retention (hours)').getAttribute('aria-invalid'), null);
  assert.equal((await policies()).some((p) => p.name === 'too-fast'), false);
  await page.context().close();
});

test('Edit changes a policy through PATCH and the table shows the new value', async () => {
  const created = await vault.call('POST', '/api/v1/policies', vault.ownerToken, { vaultId, name: 'silver' });
  assert.equal(created.status, 201);
  const { page } = await openPolicies(vault.ownerToken);
  const row = page.getByRole('row', { name: /silver/ });
  await row.getByRole('button', { name: 'Edit' }).click();
  const dialog = page.getByRole('dialog', { name: 'Edit policy silver' });
  await dialog.waitFor();
  assert.equal(await dialog.getByLabel('RPO threshold (minutes)').inputValue(), '15', 'the API default, shown in minutes');
  await dialog.getByLabel('Recovery point retention (hours)').fill('72');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('row', { name: /silver/ }).getByText('72 h').waitFor();
  assert.equal((await policies()).find((p) => p.name === 'silver')?.retentionHours, 72);
  // A bad edit keeps the dialog open with the reason.
  await page.getByRole('row', { name: /silver/ }).getByRole('button', { name: 'Edit' }).click();
  await dialog.getByLabel('Crash-consistent frequency (seconds)').fill('99999');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await dialog.getByRole('alert').waitFor();
  assert.match(await dialog.getByRole('alert').innerText(), /crash consistent frequency seconds/i);
  assert.equal(await dialog.getByLabel('Crash-consistent frequency (seconds)').getAttribute('aria-invalid'), 'true');
  assert.equal((await policies()).find((p) => p.name === 'silver')?.crashConsistentFrequencySeconds, 300);
  await page.context().close();
});

test('a reader sees the policies but no Create or Edit', async () => {
  const { reader } = await vault.tokensByRole();
  const { page } = await openPolicies(reader);
  await page.getByRole('row', { name: /gold/ }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Edit' }).count(), 0);
  assert.equal(await page.getByRole('button', { name: 'Create policy' }).count(), 0);
  assert.equal(await page.getByRole('form', { name: 'Create policy' }).count(), 0);
  await page.context().close();
});

test('keyboard: Tab goes from the name through every field to Create policy, and Enter creates it', async () => {
  const { page } = await openPolicies(vault.ownerToken);
  const form = page.getByRole('form', { name: 'Create policy' });
  await form.getByLabel('Name').focus();
  await page.keyboard.type('bronze');
  const seen: string[] = [];
  for (let i = 0; i < 10; i++) {
    await page.keyboard.press('Tab');
    const label = await page.evaluate<string>(FOCUSED_LABEL);
    seen.push(label);
    if (label === 'button:Create policy') break;
  }
  assert.deepEqual(seen, [
    'RPO threshold (minutes)',
    'Recovery point retention (hours)',
    'App-consistent snapshot frequency (minutes)',
    'Crash-consistent frequency (seconds)',
    'button:Create policy',
  ]);
  await page.keyboard.press('Enter');
  await page.getByRole('row', { name: /bronze/ }).waitFor();
  assert.equal((await policies()).find((p) => p.name === 'bronze')?.rpoThresholdSeconds, 900);
  await page.context().close();
});
