import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser, openPortal } from '../helpers/browser.js';
import { startLiveVault, type LiveVault } from '../vault/api/harness.js';

let vault: LiveVault;
let browser: Browser;
let registered: Awaited<ReturnType<LiveVault['registerServer']>>;
let vaultName: string;
let serverName: string;

before(async () => {
  vault = await startLiveVault('portal-infrastructure');
  browser = await launchBrowser();
  registered = await vault.registerServer();
  vaultName = String((await vault.call('GET', `/api/v1/vaults/${registered.vaultId}`, vault.ownerToken)).json.name);
  serverName = String((await vault.call('GET', `/api/v1/config-servers/${registered.serverId}`, vault.ownerToken)).json.name);
});

after(async () => {
  await browser?.close();
  await vault?.stop();
});

async function openInfrastructure(token: string): Promise<{ page: Page; problems: string[] }> {
  const opened = await openPortal(browser, `${vault.server.url}/#/infrastructure`, token);
  await opened.page.getByRole('heading', { name: 'Infrastructure', level: 1 }).waitFor();
  return opened;
}

function register(registrationKey: string) {
  return vault.call('POST', '/api/v1/config-servers/register', undefined, {
    registrationKey,
    name: `cs-${Math.random().toString(36).slice(2, 8)}`,
    address: '10.0.0.6',
    version: '0.1.0',
    clock: new Date().toISOString(),
  });
}

test('Create vault with a passphrase shows the store recovery key once, with a notice to save it', async () => {
  const { page, problems } = await openInfrastructure(vault.ownerToken);
  const form = page.getByRole('form', { name: 'Create vault' });
  await form.getByLabel('Vault name').fill('east');
  await form.getByLabel('Location').fill('east-dc');
  await form.getByLabel('Store URL').fill(`file://${join(vault.tmpDir, 'east-store')}`);
  await form.getByLabel('Store passphrase (optional)').fill('correct horse battery staple');
  await form.getByRole('button', { name: 'Create vault' }).click();
  const recoveryKey = page.getByLabel('Store recovery key');
  await recoveryKey.waitFor();
  assert.ok((await recoveryKey.inputValue()).length >= 16, 'the recovery key is shown');
  assert.match(await page.getByRole('status').filter({ hasText: 'Save this now' }).innerText(), /shown this once/);
  await page.getByRole('row', { name: /east-dc/ }).waitFor();
  const vaults = (await vault.call('GET', '/api/v1/vaults', vault.ownerToken)).json.items as { name: string; location: string }[];
  assert.ok(vaults.some((v) => v.name === 'east' && v.location === 'east-dc'));
  await page.getByRole('button', { name: 'I have saved it' }).click();
  assert.equal(await page.getByLabel('Store recovery key').count(), 0, 'gone once dismissed');
  // A store URL the API refuses is a readable error on its field.
  await form.getByLabel('Vault name').fill('bad');
  await form.getByLabel('Location').fill('x');
  await form.getByLabel('Store URL').fill('ftp://nowhere');
  await form.getByRole('button', { name: 'Create vault' }).click();
  await form.getByRole('alert').waitFor();
  assert.match(await form.getByRole('alert').innerText(), /store url/i);
  assert.equal(await form.getByLabel('Store URL').getAttribute('aria-invalid'), 'true');
  assert.deepEqual(problems.filter((p) => !p.includes('400')), []);
  await page.context().close();
});

test('Download registration key saves the key as a file that registers a configuration server; the list shows it valid, Revoke stops it', async () => {
  const { page } = await openInfrastructure(vault.ownerToken);
  const keys = page.getByRole('region', { name: `Registration keys of ${vaultName}` });
  const before = ((await vault.call('GET', `/api/v1/vaults/${registered.vaultId}/registration-keys`, vault.ownerToken)).json.items as unknown[]).length;
  const [download] = await Promise.all([page.waitForEvent('download'), keys.getByRole('button', { name: 'Download registration key' }).click()]);
  assert.equal(download.suggestedFilename(), `${vaultName}.lifeboat-registration-key`);
  const text = (await readFile(await download.path(), 'utf8')).trim();
  const notice = keys.getByRole('status');
  await notice.waitFor();
  assert.match(await notice.innerText(), /valid until/);
  const listed = (await vault.call('GET', `/api/v1/vaults/${registered.vaultId}/registration-keys`, vault.ownerToken)).json.items as {
    id: string;
    revoked: boolean;
  }[];
  assert.equal(listed.length, before + 1);
  // The file's text is the key the vault accepts.
  const reg = await register(text);
  assert.equal(reg.status, 201, reg.text);
  const newServer = (reg.json.server as { name: string }).name;
  await page.getByRole('table', { name: `Configuration servers of ${vaultName}` }).getByRole('row', { name: new RegExp(`^${newServer} `) }).waitFor();

  // Revoke every valid key of the vault through the dialog; then registering with the downloaded key fails.
  while ((await keys.getByRole('button', { name: 'Revoke' }).count()) > 0) {
    const count = await keys.getByRole('button', { name: 'Revoke' }).count();
    await keys.getByRole('button', { name: 'Revoke' }).first().click();
    const dialog = page.getByRole('dialog', { name: 'Revoke registration key' });
    await dialog.getByRole('button', { name: 'Revoke key' }).click();
    // One opener fewer: the revoked key's row has none.
    await keys.locator('tbody td > button').nth(count - 1).waitFor({ state: 'detached' });
  }
  assert.ok((await keys.getByText('revoked', { exact: true }).count()) >= 1);
  const after = (await vault.call('GET', `/api/v1/vaults/${registered.vaultId}/registration-keys`, vault.ownerToken)).json.items as { revoked: boolean }[];
  assert.ok(after.every((k) => k.revoked));
  assert.equal((await register(text)).status, 401);
  await page.context().close();
});

test('configuration and process servers: health, heartbeat, spool bar; Refresh (keyboard Enter) requests discovery', async () => {
  const beat = await vault.call('POST', `/api/v1/config-servers/${registered.serverId}/heartbeat`, registered.credential, {
    version: '0.1.0',
    clock: new Date().toISOString(),
    processServers: [{ name: 'ps-edge', spoolUsedBytes: 256 * 1024 * 1024, spoolLimitBytes: 1024 * 1024 * 1024, throughputBytesPerSec: 5 * 1024 * 1024 }],
  });
  assert.equal(beat.status, 200, beat.text);
  const { page } = await openInfrastructure(vault.ownerToken);
  const serverRow = page.getByRole('table', { name: `Configuration servers of ${vaultName}` }).getByRole('row', { name: new RegExp(`^${serverName} `) });
  await serverRow.waitFor();
  assert.match(await serverRow.innerText(), /10\.0\.0\.5[\s\S]*0\.1\.0[\s\S]*(healthy|warning|critical|unknown)[\s\S]*ago[\s\S]*never/);
  const psRow = page.getByRole('row', { name: /ps-edge/ });
  await psRow.waitFor();
  assert.equal(await psRow.getByRole('progressbar', { name: 'Spool of ps-edge' }).getAttribute('aria-valuenow'), '25');
  assert.match(await psRow.innerText(), /256\.0 MiB of 1\.0 GiB[\s\S]*5\.0 MiB\/s/);

  const refresh = serverRow.getByRole('button', { name: `Refresh ${serverName}` });
  await refresh.focus();
  await page.keyboard.press('Enter');
  await serverRow.getByRole('status').filter({ hasText: 'Refresh requested' }).waitFor();
  const shown = await vault.call('GET', `/api/v1/config-servers/${registered.serverId}`, vault.ownerToken);
  assert.notEqual(shown.json.lastRefreshAt, null);
  const next = await vault.call('POST', `/api/v1/config-servers/${registered.serverId}/heartbeat`, registered.credential, { version: '0.1.0', clock: new Date().toISOString() });
  assert.equal(next.json.refreshRequested, true);
  await page.context().close();
});

test('a reader sees vaults, keys and servers but no Create vault, Download, Revoke or Refresh', async () => {
  const { reader } = await vault.tokensByRole();
  const { page } = await openInfrastructure(reader);
  await page.getByRole('table', { name: `Configuration servers of ${vaultName}` }).getByRole('row', { name: new RegExp(`^${serverName} `) }).waitFor();
  await page.getByRole('region', { name: `Registration keys of ${vaultName}` }).getByRole('table').waitFor();
  for (const name of ['Create vault', 'Download registration key', 'Revoke', `Refresh ${serverName}`]) {
    assert.equal(await page.getByRole('button', { name }).count(), 0, name);
  }
  assert.equal(await page.getByRole('form', { name: 'Create vault' }).count(), 0);
  await page.context().close();
});
