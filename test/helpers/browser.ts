import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { repoRoot, requireTool } from './env.js';

/**
 * Debian's Chromium driven by playwright-core (no browser download). The flags keep it
 * from reaching for the network at start (component updates, sync, background
 * services): the tests' pages are on loopback only.
 */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = requireTool('chromium', 'chromium');
  // Playwright gives each launch a fresh, empty profile of its own.
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

/**
 * A page of the portal at `url`, 1280×860. With `token`, the page starts signed in with
 * that API token (what "Sign in with an API token" stores); without, at the sign-in page.
 * Every console error and failed request of the page is collected in `problems`.
 */
export async function openPortal(browser: Browser, url: string, token?: string): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  if (token) {
    // Runs in the page before its own scripts (a string: the test's types have no DOM).
    const t = JSON.stringify(token);
    await context.addInitScript({
      content: `if (!sessionStorage.getItem('lifeboat.session')) { sessionStorage.setItem('lifeboat.session', ${t}); sessionStorage.setItem('lifeboat.session.kind', 'token'); }`,
    });
  }
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  await page.goto(url);
  return { page, problems };
}

/** Saves a full-page screenshot as docs/screenshots/NAME.png (shown in the README); returns its path. */
export async function saveScreenshot(page: Page, name: string): Promise<string> {
  const dir = join(repoRoot, 'docs', 'screenshots');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
