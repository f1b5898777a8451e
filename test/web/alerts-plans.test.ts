/**
 * The portal's alerts and recovery plans, in Debian's Chromium against a vault with the
 * fake compute driver (test/vault/recovery/harness.ts): open and cleared alerts written
 * through the repositories, filtered by severity; a plan created through the form (a
 * refusal of the vault shown as a sentence first), seen in the list and through the API,
 * its drill schedule set; its test failover run from the plan page, followed to its job,
 * whose manual action is acknowledged there, then cleaned up with notes; and a reader
 * who sees no button to change or run anything.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { Job, RecoveryPlan } from '../../src/core/model.js';
import { DbTokens } from '../../src/vault/services/db-services.js';
import { launchBrowser, openPortal, saveScreenshot } from '../helpers/browser.js';
import { startRecoveryVault, type RecoveryVault } from '../vault/recovery/harness.js';

const MIN = 60_000;

describe('portal: alerts and recovery plans', () => {
  let v: RecoveryVault;
  let browser: Browser;
  let operator: string;
  let reader: string;
  let plan: RecoveryPlan;

  const tokenFor = async (role: 'operator' | 'reader'): Promise<string> => {
    const user = await v.call('POST', '/api/v1/users', { name: `${role}-user`, role });
    assert.equal(user.status, 201, user.text);
    return (await new DbTokens(v.server.repos, () => new Date()).create({ userId: String(user.json.id), name: `${role} token`, expiresAt: null })).secret;
  };
  const open = async (token: string, path: string): Promise<{ page: Page; problems: string[] }> => openPortal(browser, `${v.server.url}/#${path}`, token);

  before(async () => {
    v = await startRecoveryVault('portal-alerts-plans');
    await v.pointsAt(Date.now() - 10 * MIN, 0x11);
    operator = await tokenFor('operator');
    reader = await tokenFor('reader');
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await v?.stop();
  });

  it('open alerts come first with severity, kind in words and the item linked; cleared ones on demand; a severity filter', async () => {
    const alerts = v.server.repos.alerts;
    await alerts.raise({ kind: 'rpo-threshold-exceeded', subjectId: v.item.id, severity: 'critical', message: 'RPO 12 min is above its threshold of 10 min' });
    await alerts.raise({ kind: 'heartbeat-lost', subjectId: 'cs-gone', severity: 'warning', message: 'no heartbeat from configuration server cs-gone for 15 min' });
    await alerts.raise({ kind: 'job-failed', subjectId: 'job-1', severity: 'warning', message: 'job job-1 failed: the store was unreachable' });
    assert.equal(await alerts.clear('job-failed', 'job-1'), true);

    const { page, problems } = await open(reader, '/alerts');
    const openTable = page.getByRole('table', { name: 'Open alerts' });
    const rpoRow = openTable.getByRole('row').filter({ hasText: 'RPO above its threshold' });
    await rpoRow.waitFor();
    assert.equal(await openTable.getByRole('row').count(), 3, 'a header row and the two open alerts');
    assert.match(await openTable.getByRole('row').nth(1).innerText(), /critical/, 'critical first');
    assert.match(await rpoRow.innerText(), /critical[\s\S]*RPO 12 min is above its threshold of 10 min[\s\S]*ago/);
    assert.equal(await rpoRow.getByRole('link', { name: 'web' }).getAttribute('href'), `#/items/${v.item.id}`);
    const heartbeat = openTable.getByRole('row').filter({ hasText: 'Heartbeat lost' });
    assert.match(await heartbeat.innerText(), /warning[\s\S]*cs-gone/);
    assert.equal(await heartbeat.getByRole('link').count(), 0, 'a subject that is not an item is not a link');
    assert.equal(await page.getByRole('table', { name: 'Cleared alerts' }).count(), 0);
    assert.equal(await page.getByText('the store was unreachable').count(), 0, 'cleared alerts are hidden until asked for');

    await page.getByLabel('Show cleared').check();
    const cleared = page.getByRole('table', { name: 'Cleared alerts' });
    await cleared.getByRole('row').filter({ hasText: 'Job failed' }).waitFor();
    assert.equal(await cleared.getByRole('row').count(), 2);
    assert.match(await cleared.innerText(), /the store was unreachable/);
    assert.equal(await openTable.getByRole('row').count(), 3, 'open alerts stay first and unchanged');
    await saveScreenshot(page, 'alerts');

    await page.getByLabel('Severity').selectOption('critical');
    await page.getByText('No cleared critical alerts.').waitFor();
    assert.equal(await openTable.getByRole('row').count(), 2, 'only the critical alert');
    assert.equal(await heartbeat.count(), 0);
    assert.deepEqual(problems, []);
    await page.context().close();
  });

  it('a plan created through the form (after a readable refusal) is in the list and in the API; its drill schedule is set', async () => {
    const { page, problems } = await open(v.token, '/plans');
    await page.getByRole('button', { name: 'Create plan' }).click();
    await page.getByLabel('Plan name').fill('dr-web');
    await page.getByLabel('Description').fill('The web tier');
    await page.getByLabel('Group 1 name').fill('app');
    await page.getByLabel('Group 1 manual actions').fill('Check the shop answers\n');
    // No item chosen: the vault refuses, and the form says so in words.
    await page.getByRole('form', { name: 'Create plan' }).getByRole('button', { name: 'Create plan' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /item ids/);
    assert.doesNotMatch(await alert.innerText(), /[{}]/, 'no raw JSON');

    // A second group, removed again: what is sent is what is shown.
    await page.getByRole('button', { name: 'Add group' }).click();
    await page.getByLabel('Group 2 name').fill('db');
    await page.getByRole('button', { name: 'Remove group 2' }).click();
    assert.equal(await page.getByLabel('Group 2 name').count(), 0);

    await page.getByLabel('Group 1 items').selectOption({ label: 'web' });
    await page.getByRole('form', { name: 'Create plan' }).getByRole('button', { name: 'Create plan' }).click();
    await page.getByRole('heading', { name: 'dr-web', level: 1 }).waitFor();
    const listed = (await v.call('GET', '/api/v1/plans')).json.items as unknown as RecoveryPlan[];
    assert.equal(listed.length, 1);
    plan = listed[0]!;
    assert.equal(plan.name, 'dr-web');
    assert.equal(plan.description, 'The web tier');
    assert.deepEqual(plan.groups, [{ name: 'app', itemIds: [v.item.id], preScripts: [], postScripts: [], manualActions: ['Check the shop answers'] }]);
    assert.equal(new URL(page.url()).hash, `#/plans/${plan.id}`);
    const group = page.getByRole('listitem').filter({ has: page.getByRole('heading', { name: 'Group 1: app' }) });
    assert.equal(await group.getByRole('link', { name: 'web' }).getAttribute('href'), `#/items/${v.item.id}`);
    assert.match(await group.innerText(), /Check the shop answers/);

    await page.getByLabel('Drill every (hours)').fill('24');
    await page.getByRole('button', { name: 'Save schedule' }).click();
    await page.getByText('Schedule saved.').waitFor();
    assert.equal((await v.call('GET', `/api/v1/plans/${plan.id}/drill-settings`)).json.scheduleEveryHours, 24);
    await page.getByText('every 24 h').waitFor();

    // Edit: the form comes back filled in; the change is saved with PATCH.
    await page.getByRole('button', { name: 'Edit plan' }).click();
    assert.equal(await page.getByLabel('Group 1 name').inputValue(), 'app');
    await page.getByLabel('Description').fill('The web tier and its shop');
    await page.getByRole('button', { name: 'Save plan' }).click();
    await page.getByText('The web tier and its shop').waitFor();
    const edited = (await v.call('GET', `/api/v1/plans/${plan.id}`)).json as unknown as RecoveryPlan;
    assert.equal(edited.description, 'The web tier and its shop');
    assert.deepEqual(edited.groups, plan.groups, 'the groups are kept');

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Recovery plans' }).click();
    const row = page.getByRole('table', { name: 'Recovery plans' }).getByRole('row').filter({ has: page.getByRole('link', { name: 'dr-web' }) });
    await row.waitFor();
    assert.match(await row.innerText(), /dr-web\s+The web tier and its shop\s+west\s+1\s+1\s+never/);
    assert.deepEqual(
      problems.filter((p) => !/status of 400/.test(p)),
      [],
    );
    await page.context().close();
  });

  it("an operator runs the plan's test failover from its page, follows the link to its job and acknowledges its manual action there", async () => {
    const { page, problems } = await open(operator, `/plans/${plan.id}`);
    await page.getByRole('heading', { name: 'dr-web', level: 1 }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Edit plan' }).count(), 0, 'an operator may not configure');
    assert.equal(await page.getByRole('button', { name: 'Save schedule' }).count(), 0);
    await page.getByRole('button', { name: 'Test failover', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'Test failover of dr-web' });
    assert.equal(await dialog.getByLabel('Recovery point').inputValue(), 'latest-processed');
    await dialog.getByRole('button', { name: 'Start test failover' }).click();
    await page.getByRole('status').getByText('Test failover of the plan started').waitFor();
    const follow = page.getByRole('status').getByRole('link', { name: 'follow its job' });
    await follow.waitFor();
    const href = (await follow.getAttribute('href'))!;
    const jobId = href.replace('#/jobs/', '');
    await follow.click();
    await page.getByRole('heading', { name: 'Recovery plan', level: 1 }).waitFor();
    assert.match(await page.getByRole('region', { name: 'Job' }).innerText(), /recovery plan/);

    await page.getByText('Waiting for a manual action: Check the shop answers').waitFor();
    const steps = page.getByRole('list', { name: 'Steps' }).getByRole('listitem');
    assert.deepEqual(await steps.allInnerTexts().then((t) => t.map((s) => s.split('\n')[1])), [
      'Group 1 (app): test failover of 1 item',
      'Group 1 (app): manual action: Check the shop answers',
    ]);
    assert.equal((await v.call('GET', `/api/v1/jobs/${jobId}`)).json.state, 'running', 'the job waits for the operator');
    await page.getByRole('button', { name: 'Acknowledge' }).click();
    await page.getByRole('dialog', { name: 'Acknowledge the manual action' }).getByRole('button', { name: 'Acknowledge' }).click();
    await page.getByRole('status', { name: 'Updates: ended' }).waitFor();
    const job = (await v.waitJob(jobId)) as Job;
    assert.equal(job.kind, 'recovery-plan');
    assert.equal(job.state, 'succeeded');
    assert.equal(await page.getByRole('img', { name: 'succeeded' }).count(), 2);
    assert.equal(await page.getByRole('button', { name: 'Acknowledge' }).count(), 0);

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Recovery plans' }).click();
    const row = page.getByRole('table', { name: 'Recovery plans' }).getByRole('row').filter({ has: page.getByRole('link', { name: 'dr-web' }) });
    await row.getByText('passed').waitFor();
    await saveScreenshot(page, 'plans');

    // Its cleanup, with notes that reach the item's drill report.
    await row.getByRole('link', { name: 'dr-web' }).click();
    await page.getByRole('button', { name: 'Cleanup test failover' }).click();
    const cleanup = page.getByRole('dialog', { name: 'Clean up the test failover of dr-web' });
    await cleanup.getByLabel('Notes').fill('shop answered in 40 s');
    await cleanup.getByRole('button', { name: 'Clean up' }).click();
    const cleanupLink = page.getByRole('status').getByRole('link', { name: 'follow its job' });
    await page.getByRole('status').getByText('Cleanup test failover of the plan started').waitFor();
    const cleanupJob = await v.waitJob((await cleanupLink.getAttribute('href'))!.replace('#/jobs/', ''));
    assert.equal(cleanupJob.state, 'succeeded');
    const reports = (await v.call('GET', `/api/v1/items/${v.item.id}/drill-reports`)).json.items as { planId: string | null; notes: string | null }[];
    assert.equal(reports[0]!.planId, plan.id);
    assert.match(reports[0]!.notes ?? '', /shop answered in 40 s/);
    assert.deepEqual(problems, []);
    await page.context().close();
  });

  it('a reader sees plans, but no button to create, change or run one', async () => {
    const { page, problems } = await open(reader, '/plans');
    await page.getByRole('link', { name: 'dr-web' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Create plan' }).count(), 0);
    await page.getByRole('link', { name: 'dr-web' }).click();
    await page.getByRole('heading', { name: 'Group 1: app' }).waitFor();
    await page.getByText('every 24 h').waitFor();
    for (const name of ['Edit plan', 'Delete plan', 'Test failover', 'Cleanup test failover', 'Failover', 'Save schedule'])
      assert.equal(await page.getByRole('button', { name, exact: true }).count(), 0, name);
    assert.equal(await page.getByLabel('Drill every (hours)').count(), 0);
    assert.deepEqual(problems, []);
    await page.context().close();
  });

  it('the owner deletes the plan through its confirmation', async () => {
    const { page, problems } = await open(v.token, `/plans/${plan.id}`);
    await page.getByRole('button', { name: 'Delete plan' }).click();
    await page.getByRole('dialog', { name: 'Delete the recovery plan dr-web' }).getByRole('button', { name: 'Delete plan' }).click();
    await page.getByText('No recovery plans yet.').waitFor();
    assert.equal((await v.call('GET', `/api/v1/plans/${plan.id}`)).status, 404);
    assert.deepEqual(problems, []);
    await page.context().close();
  });
});
