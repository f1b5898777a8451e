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
