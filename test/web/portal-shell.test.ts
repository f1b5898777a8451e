import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { launchBrowser, openPortal } from '../helpers/browser.js';
import { startLiveVault, type LiveVault } from '../vault/api/harness.js';

let vault: LiveVault;
let browser: Browser;

before(async () => {
  vault = await startLiveVault('portal-shell');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await vault?.stop();
});

test('the vault serves the portal at / with a content security policy, and its assets', async () => {
  const page = await fetch(vault.server.url + '/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
  const html = await page.text();
  const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
  assert.ok(script, `the page names its script: ${html}`);
  const js = await fetch(vault.server.url + script);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type') ?? '', /javascript/);
  const missing = await fetch(vault.server.url + '/assets/..%2Fvault.db');
  assert.equal(missing.status, 404);
});

test('signing in with an API token shows the navigation; a wrong token is a readable message', async () => {
  const { page, problems } = await openPortal(browser, vault.server.url + '/');
  await page.getByRole('button', { name: 'Sign in with an API token' }).click();
  await page.getByLabel('API token').fill('lbt_nope_nope');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /Sign in again|unknown, expired or revoked/);
  assert.doesNotMatch(await alert.innerText(), /[{}]/, 'no raw JSON');
  await page.getByLabel('API token').fill(vault.ownerToken);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'Replicated items' }).count(), 1);
  assert.deepEqual(problems.filter((p) => !p.includes('401')), []);
  await page.context().close();
});

test('a user signs in with a password, changes it in the portal, signs out, and only the new one opens a session', async () => {
  const users = (await vault.call('GET', '/api/v1/users', vault.ownerToken)).json.items as { id: string; name: string }[];
  const admin = users.find((u) => u.name === 'admin');
  assert.ok(admin);
  assert.equal((await vault.call('PUT', `/api/v1/users/${admin.id}/password`, vault.ownerToken, { password: 'first password 1' })).status, 204);
  const { page, problems } = await openPortal(browser, vault.server.url + '/');
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill('first password 1');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();

  await page.getByRole('button', { name: 'Change password' }).click();
  const dialog = page.getByRole('dialog', { name: 'Change your password' });
  await dialog.getByLabel('Current password').fill('not it at all');
  await dialog.getByLabel('New password', { exact: true }).fill('second password 2');
  await dialog.getByLabel('New password again').fill('second password 2');
  await dialog.getByRole('button', { name: 'Change password' }).click();
  assert.match(await dialog.getByRole('alert').innerText(), /current password is wrong/);
  await dialog.getByLabel('Current password').fill('first password 1');
  await dialog.getByLabel('New password again').fill('second password 3');
  await dialog.getByRole('button', { name: 'Change password' }).click();
  assert.match(await dialog.getByRole('alert').innerText(), /differ/);
  await dialog.getByLabel('New password again').fill('second password 2');
  await dialog.getByRole('button', { name: 'Change password' }).click();
  await page.getByRole('status').filter({ hasText: 'Password changed' }).waitFor();

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in to Lifeboat' }).waitFor();
  const signIn = async (password: string) =>
    (await fetch(vault.server.url + '/api/v1/sessions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'admin', password }) })).status;
  assert.equal(await signIn('first password 1'), 401);
  assert.equal(await signIn('second password 2'), 201);
  assert.deepEqual(problems.filter((p) => !/40[01]/.test(p)), []);
  await page.context().close();
});
