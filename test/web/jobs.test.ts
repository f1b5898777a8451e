/**
 * The portal's jobs, in Debian's Chromium against a vault with the fake compute driver
 * (test/vault/recovery/harness.ts): a test failover's job page follows its steps live
 * through the event stream (held at "Start the test virtual machine" until the test lets
 * it go, so the running step is seen, then the end, without a reload); a cancel the
 * vault refuses (a failover must never stop half-way) is a sentence in the dialog, and
 * a dropped event stream is opened again; the list shows the jobs newest first with
 * their kinds in words.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { FakeComputeDriver } from '../../src/compute/fake.js';
import type { MachineStatus } from '../../src/compute/driver.js';
import { JOB_KINDS } from '../../src/core/jobs.js';
import type { Job } from '../../src/core/model.js';
import { launchBrowser, openPortal, saveScreenshot } from '../helpers/browser.js';
import { repoRoot } from '../helpers/env.js';
import { startRecoveryVault, type RecoveryVault } from '../vault/recovery/harness.js';

const MIN = 60_000;

/** The fake driver whose `start` waits, while held, until the test releases it. */
class HeldCompute extends FakeComputeDriver {
  private held: { release(): void; released: Promise<void>; entered(): void } | null = null;

  /** From now on a machine's start waits until `release()`; `entered` resolves when one does. */
  hold(): { entered: Promise<void>; release(): void } {
    let release!: () => void;
    let entered!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const enteredP = new Promise<void>((r) => (entered = r));
    this.held = { release, released, entered };
    return {
      entered: enteredP,
      release: () => {
        this.held = null;
        release();
      },
    };
  }

  override async start(id: string): Promise<MachineStatus> {
    const held = this.held;
    if (held) {
      held.entered();
      await held.released;
    }
    return super.start(id);
  }
}

describe('portal: jobs', () => {
  let v: RecoveryVault;
  let compute: HeldCompute;
  let browser: Browser;
  let testJob: Job;
  let failoverJob: Job;

  const open = async (path: string): Promise<{ page: Page; problems: string[] }> => openPortal(browser, `${v.server.url}/#${path}`, v.token);
  const stepItem = (page: Page, name: string) => page.getByRole('list', { name: 'Steps' }).getByRole('listitem').filter({ hasText: name });

  before(async () => {
    compute = new HeldCompute();
    v = await startRecoveryVault('portal-jobs', compute);
    await v.pointsAt(Date.now() - 10 * MIN, 0x11);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await v?.stop();
  });

  it('names every job kind as the vault titles it (the portal keeps a copy: it may import only types)', () => {
    const words = readFileSync(join(repoRoot, 'web', 'src', 'job-words.ts'), 'utf8');
    for (const [kind, spec] of Object.entries(JOB_KINDS)) assert.match(words, new RegExp(`\\n  '?${kind}'?: '${spec.title}',\\n`), kind);
  });

  it("a test failover's job page shows the running step, then the job's end, live without a reload", async () => {
    const held = compute.hold();
    const started = await v.call('POST', `/api/v1/items/${v.item.id}/test-failover`, {});
    assert.equal(started.status, 202, started.text);
    testJob = started.json as unknown as Job;
    await held.entered;

    const { page, problems } = await open(`/jobs/${testJob.id}`);
    await page.getByRole('heading', { name: 'Test failover', level: 1 }).waitFor();
    await page.evaluate(() => ((globalThis as unknown as { lifeboatMarker: string }).lifeboatMarker = 'same page'));
    await page.getByRole('status', { name: 'Updates: live' }).waitFor();

    // The steps in order, named as the API names them.
    const names = (await v.call('GET', `/api/v1/jobs/${testJob.id}`)).json.steps as { name: string }[];
    const steps = page.getByRole('list', { name: 'Steps' }).getByRole('listitem');
    await stepItem(page, 'Start the test virtual machine').getByRole('img', { name: 'running' }).waitFor();
    assert.equal(await steps.count(), names.length);
    for (let i = 0; i < names.length; i++) assert.match(await steps.nth(i).innerText(), new RegExp(names[i]!.name));
    assert.equal(await stepItem(page, 'Create the test virtual machine').getByRole('img', { name: 'succeeded' }).count(), 1);
    assert.equal(await stepItem(page, 'Check the test virtual machine').getByRole('img', { name: 'queued' }).count(), 1);
    await page.getByRole('progressbar', { name: 'Start the test virtual machine progress' }).waitFor();
    assert.match(await page.getByRole('region', { name: 'Job' }).innerText(), /running/);
    const item = page.getByRole('region', { name: 'Job' }).getByRole('link', { name: 'web' });
    assert.equal(await item.getAttribute('href'), `#/items/${v.item.id}`);
    await saveScreenshot(page, 'job-detail');

    held.release();
    await page.getByRole('status', { name: 'Updates: ended' }).waitFor();
    await stepItem(page, 'Check the test virtual machine').getByRole('img', { name: 'succeeded' }).waitFor();
    assert.equal(await page.getByRole('img', { name: 'succeeded' }).count(), names.length);
    assert.match(await page.getByRole('region', { name: 'Job' }).innerText(), /succeeded/);
    assert.equal(await page.evaluate(() => (globalThis as unknown as { lifeboatMarker?: string }).lifeboatMarker), 'same page', 'the page was not reloaded');
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).count(), 0, 'an ended job has nothing to cancel');
    assert.equal((await v.waitJob(testJob.id)).state, 'succeeded');
    assert.deepEqual(problems, []);
    await page.context().close();
  });

  it("cancelling a running failover is refused by the vault, and the dialog says why in words", async () => {
    const held = compute.hold();
    const started = await v.call('POST', `/api/v1/items/${v.item.id}/failover`, { point: { kind: 'latest-processed' } });
    assert.equal(started.status, 202, started.text);
    failoverJob = started.json as unknown as Job;
    await held.entered;

    // The first event stream the page opens ends at once without an event (a dropped
    // stream): the page opens it again and goes on live.
    const { page, problems } = await open('/');
    await page.getByRole('navigation', { name: 'Main' }).waitFor();
    let streams = 0;
    await page.route(`**/api/v1/jobs/${failoverJob.id}/events`, async (route) => {
      if (++streams === 1) await route.fulfill({ status: 200, contentType: 'text/event-stream', body: '' });
      else await route.continue();
    });
    await page.evaluate((hash) => ((globalThis as unknown as { location: { hash: string } }).location.hash = hash), `#/jobs/${failoverJob.id}`);
    await page.getByRole('heading', { name: 'Failover', level: 1 }).waitFor();
    await page.getByRole('status', { name: 'Updates: live' }).waitFor();
    assert.equal(streams, 2, 'the dropped stream was opened again');
    assert.equal(await page.getByRole('alert').count(), 0, 'a dropped stream is not an error');
    await stepItem(page, 'Start the replica virtual machine').getByRole('img', { name: 'running' }).waitFor();
    // By keyboard: the button opens the dialog, Enter confirms, Escape closes it.
    await page.getByRole('button', { name: 'Cancel job' }).focus();
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog', { name: 'Cancel this job' });
    await dialog.waitFor();
    await dialog.getByRole('button', { name: 'Cancel job' }).focus();
    await page.keyboard.press('Enter');
    const alert = dialog.getByRole('alert');
    await alert.waitFor();
    const text = await alert.innerText();
    assert.match(text, /not possible in the current state/);
    assert.match(text, /never be left half-done/);
    assert.doesNotMatch(text, /[{}]/, 'no raw JSON');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal((await v.call('GET', `/api/v1/jobs/${failoverJob.id}`)).json.state, 'running', 'the refused cancel changed nothing');

    held.release();
    await page.getByRole('status', { name: 'Updates: ended' }).waitFor();
    assert.equal((await v.waitJob(failoverJob.id)).state, 'succeeded');
    assert.deepEqual(
      problems.filter((p) => !/status of 409/.test(p)),
      [],
    );
    await page.context().close();
  });

  it('the list shows the jobs newest first with their kinds in words, their item, and filters by state', async () => {
    const all = (await v.call('GET', '/api/v1/jobs')).json.items as unknown as Job[];
    const { page, problems } = await open('/jobs');
    const table = page.getByRole('table');
    await table.getByRole('link', { name: 'Test failover', exact: true }).waitFor();
    const rows = table.getByRole('row');
    assert.equal(await rows.count(), all.length + 1, 'a header row and one row per job');
    // The failover from a drill queued its cleanup first: newest first is failover, cleanup, test failover.
    const kinds = await table.locator('tbody tr td:first-child').allInnerTexts();
    assert.deepEqual(kinds, ['Failover', 'Cleanup test failover', 'Test failover']);
    const first = rows.nth(1);
    assert.equal(await first.getByRole('link', { name: 'Failover' }).getAttribute('href'), `#/jobs/${failoverJob.id}`);
    assert.equal(await first.getByRole('link', { name: 'web' }).getAttribute('href'), `#/items/${v.item.id}`);
    assert.match(await first.innerText(), /succeeded/);
    assert.equal(await first.getByRole('progressbar').getAttribute('aria-valuenow'), '100');
    await saveScreenshot(page, 'jobs');

    await page.getByLabel('State').selectOption('running');
    await page.getByText('No running jobs.').waitFor();
    await page.getByLabel('State').selectOption('succeeded');
    await table.getByRole('link', { name: 'Test failover', exact: true }).waitFor();
    assert.equal(await rows.count(), 4);
    assert.deepEqual(problems, []);
    await page.context().close();
  });
});
