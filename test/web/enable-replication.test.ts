import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser, openPortal, saveScreenshot } from '../helpers/browser.js';
import { startLiveVault, type LiveVault } from '../vault/api/harness.js';

let vault: LiveVault;
let browser: Browser;
let registered: Awaited<ReturnType<LiveVault['registerServer']>>;
let vaultName: string;
let serverName: string;

interface Row {
  id: string;
  name: string;
}

before(async () => {
  vault = await startLiveVault('portal-enable');
  browser = await launchBrowser();
  registered = await vault.registerServer();
  vaultName = String((await vault.call('GET', `/api/v1/vaults/${registered.vaultId}`, vault.ownerToken)).json.name);
  serverName = String((await vault.call('GET', `/api/v1/config-servers/${registered.serverId}`, vault.ownerToken)).json.name);
  const policy = await vault.call('POST', '/api/v1/policies', vault.ownerToken, { vaultId: registered.vaultId, name: 'gold', rpoThresholdSeconds: 120 });
  assert.equal(policy.status, 201, policy.text);
  for (const m of [
    { name: 'web-1', privateIp: '10.0.0.21', os: 'debian-12' },
    { name: 'legacy', privateIp: '10.0.0.22', os: 'windows-2003' },
    { name: 'app-3', privateIp: '10.0.0.23', os: 'ubuntu-22.04' },
  ]) {
    const made = await vault.call('POST', '/api/v1/machines', vault.ownerToken, { configServerId: registered.serverId, ...m });
    assert.equal(made.status, 201, made.text);
  }
});

after(async () => {
  await browser?.close();
  await vault?.stop();
});

async function openFlow(token: string): Promise<{ page: Page; problems: string[] }> {
  const opened = await openPortal(browser, `${vault.server.url}/#/enable-replication`, token);
  await opened.page.getByRole('heading', { name: 'Enable replication', level: 1 }).waitFor();
  return opened;
}

async function step(page: Page, name: string): Promise<void> {
  await page.getByRole('group', { name: new RegExp(`^Step \\d+ of 10: ${name}$`) }).waitFor();
}

async function next(page: Page, to: string): Promise<void> {
  await page.getByRole('button', { name: 'Next' }).click();
  await step(page, to);
}

/** Source, machine type, process server, target, storage and network with their defaults, up to Machines. */
async function toMachines(page: Page): Promise<void> {
  await step(page, 'Source');
  await page.getByLabel('Vault').selectOption({ label: `${vaultName} (west)` });
  await page.getByLabel('Configuration server').selectOption({ index: 1 });
  await next(page, 'Machine type');
  await next(page, 'Process server');
  await next(page, 'Target');
  await next(page, 'Storage');
  await next(page, 'Network');
  await next(page, 'Machines');
}

async function items(): Promise<{ id: string; machineId: string; state: string }[]> {
  return (await vault.call('GET', '/api/v1/items', vault.ownerToken)).json.items as { id: string; machineId: string; state: string }[];
}

async function machineId(name: string): Promise<string> {
  const list = (await vault.call('GET', `/api/v1/machines?configServerId=${registered.serverId}`, vault.ownerToken)).json.items as Row[];
  const m = list.find((x) => x.name === name);
  assert.ok(m, name);
  return m.id;
}

test('the guided flow with a manual install enables a machine and links its Enable protection job', async () => {
  const { page, problems } = await openFlow(vault.ownerToken);
  const steps = page.getByRole('list', { name: 'Steps' });
  assert.deepEqual(
    (await steps.getByRole('listitem').allInnerTexts()).map((t) => t.trim()),
    ['1 Source', '2 Machine type', '3 Process server', '4 Target', '5 Storage', '6 Network', '7 Machines', '8 Account', '9 Policy', '10 Review'],
  );
  // Next without a choice says what is missing and stays.
  await page.getByRole('button', { name: 'Next' }).click();
  assert.equal(await page.getByRole('alert').innerText(), 'Choose a vault.');
  await step(page, 'Source');

  await page.getByLabel('Vault').selectOption({ label: `${vaultName} (west)` });
  assert.match(await page.getByLabel('Configuration server').locator('option').nth(1).innerText(), new RegExp(`^${serverName} \\(10\\.0\\.0\\.5`));
  await page.getByLabel('Configuration server').selectOption({ index: 1 });
  await next(page, 'Machine type');
  assert.equal(await page.getByRole('radio', { name: /Physical or virtual machine with the Lifeboat agent/ }).isChecked(), true);
  await next(page, 'Process server');
  assert.equal(await page.getByRole('radio', { name: /Built-in process server/ }).isChecked(), true);
  await next(page, 'Target');
  await page.getByLabel('Name prefix for recovered machines (optional)').fill('dr-');
  await next(page, 'Storage');
  assert.match(await page.getByRole('group', { name: /Storage/ }).innerText(), /file:\/\//);
  await next(page, 'Network');
  await page.getByRole('radio', { name: 'Configure now for the selected machines' }).check();
  await page.getByLabel('Network', { exact: true }).fill('recovery-net');
  await page.getByLabel('Subnet (optional)').fill('10.9.0.0/24');
  await next(page, 'Machines');

  // The unsupported machine cannot be chosen, and says why.
  const legacy = page.getByRole('row', { name: /legacy/ });
  assert.equal(await legacy.getByRole('checkbox', { name: 'Select legacy' }).isDisabled(), true);
  assert.match(await legacy.innerText(), /no: /);
  await page.getByRole('checkbox', { name: 'Select web-1' }).check();
  // "Add machine" adds one by name, IP and OS, and selects it.
  const add = page.getByRole('form', { name: 'Add machine' });
  await add.getByLabel('Machine name').fill('db-2');
  await add.getByLabel('Private IP').fill('10.0.0.24');
  await add.getByLabel('Operating system').fill('rhel-9');
  await add.getByRole('button', { name: 'Add machine' }).click();
  const db2 = page.getByRole('checkbox', { name: 'Select db-2' });
  await db2.waitFor();
  assert.equal(await db2.isChecked(), true);
  await saveScreenshot(page, 'enable-replication-machines');
  await next(page, 'Account');
  await page.getByRole('radio', { name: 'I install the agent myself (manual)' }).check();
  await next(page, 'Policy');
  await page.getByLabel('Replication policy').selectOption({ label: 'gold' });
  assert.match(await page.getByRole('definition').first().innerText(), /2 min/);
  await next(page, 'Review');
  const review = await page.getByRole('group', { name: /Review/ }).innerText();
  assert.match(review, /dr-web-1/);
  assert.match(review, /dr-db-2/);
  assert.match(review, /manual install/);
  assert.match(review, /recovery-net \/ 10\.9\.0\.0\/24/);

  await page.getByRole('button', { name: 'Enable replication' }).click();
  await page.getByRole('heading', { name: 'Replication enabled' }).waitFor();
  await saveScreenshot(page, 'enable-replication-result');
  const after = await items();
  assert.equal(after.length, 2);
  for (const name of ['web-1', 'db-2']) {
    const link = page.getByRole('link', { name: `Enable protection job of ${name}` });
    const href = await link.getAttribute('href');
    assert.match(href ?? '', /^#\/jobs\/[0-9A-Za-z_-]+$/);
    const job = await vault.call('GET', `/api/v1/jobs/${href!.slice('#/jobs/'.length)}`, vault.ownerToken);
    assert.equal(job.status, 200);
    assert.equal(job.json.kind, 'enable-protection');
    const item = after.find((i) => i.id === job.json.itemId);
    assert.ok(item, `the job's item is listed: ${name}`);
    assert.equal(item.machineId, await machineId(name));
  }
  const computes = (await Promise.all(after.map(async (i) => (await vault.call('GET', `/api/v1/items/${i.id}`, vault.ownerToken)).json.compute))) as {
    targetName: string;
    network: string;
    subnet: string;
  }[];
  assert.deepEqual(computes.map((c) => `${c.targetName} ${c.network} ${c.subnet}`).sort(), ['dr-db-2 recovery-net 10.9.0.0/24', 'dr-web-1 recovery-net 10.9.0.0/24']);
  // The job link opens the job's page.
  await page.getByRole('link', { name: 'Enable protection job of web-1' }).click();
  await page.waitForURL(/#\/jobs\//);
  assert.deepEqual(problems, []);
  await page.context().close();
});

test('a refusal of the vault (a machine found unsupported meanwhile) is shown readably, naming the machine', async () => {
  const { page } = await openFlow(vault.ownerToken);
  await toMachines(page);
  await page.getByRole('checkbox', { name: 'Select app-3' }).check();
  await vault.server.repos.machines.update(await machineId('app-3'), { supported: false, supportReason: 'kernel 2.6 is too old' });
  // Add an account on the way (push install), chosen at once.
  await next(page, 'Account');
  const add = page.getByRole('form', { name: 'Add account' });
  await add.getByLabel('Account name').fill('root-ssh');
  await add.getByLabel('User name').fill('root');
  await add.getByLabel('Account password').fill('s3cret-pass');
  await add.getByRole('button', { name: 'Add account' }).click();
  const radio = page.getByRole('radio', { name: /root-ssh \(root, password\)/ });
  await radio.waitFor();
  assert.equal(await radio.isChecked(), true);
  await next(page, 'Policy');
  await page.getByLabel('Replication policy').selectOption({ label: 'gold' });
  await next(page, 'Review');
  await page.getByRole('button', { name: 'Enable replication' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  const text = await alert.innerText();
  assert.match(text, /machine app-3 is not supported: kernel 2\.6 is too old/);
  assert.doesNotMatch(text, /[{}]/);
  assert.equal((await items()).length, 2, 'nothing enabled');
  assert.ok(!vault.logLines.some((l) => l.includes('s3cret-pass')), 'the account password never reaches a log line');
  await page.context().close();
});

test('keyboard: Tab reaches Next and Enter moves on; already protected machines cannot be chosen again', async () => {
  const { page } = await openFlow(vault.ownerToken);
  await step(page, 'Source');
  await page.getByLabel('Vault').focus();
  await page.keyboard.press('ArrowDown');
  await page.getByLabel('Configuration server').focus();
  await page.keyboard.press('ArrowDown');
  let reached = false;
  for (let i = 0; i < 10 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = (await page.locator('button:focus').count()) === 1 && (await page.locator('button:focus').innerText()) === 'Next';
  }
  assert.ok(reached, 'Tab reaches Next');
  await page.keyboard.press('Enter');
  await step(page, 'Machine type');
  for (const s of ['Process server', 'Target', 'Storage', 'Network', 'Machines']) await next(page, s);
  assert.equal(await page.getByRole('checkbox', { name: 'Select web-1' }).isDisabled(), true);
  assert.match(await page.getByRole('row', { name: /web-1/ }).innerText(), /already protected/);
  await page.context().close();
});

test('a reader has no Enable replication entry and the page says why', async () => {
  const { reader } = await vault.tokensByRole();
  const { page } = await openFlow(reader);
  assert.equal(await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Enable replication' }).count(), 0);
  assert.match(await page.getByText('Your role does not allow enabling replication').innerText(), /configure permission/);
  assert.equal(await page.getByRole('button', { name: 'Next' }).count(), 0);
  await page.context().close();
});
