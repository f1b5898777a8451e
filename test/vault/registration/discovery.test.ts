/**
 * Discovery over the heartbeat, through the real assembled vault: a heartbeat's
 * discovery report becomes machines of that configuration server (discovered,
 * with the supported-OS check), `refresh` is an instruction carried by the next
 * heartbeat answers until a report arrives, and bad reports are refused.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startLiveVault, type LiveVault } from '../api/harness.js';

interface MachineJson {
  id: string;
  name: string;
  privateIp: string;
  os: string;
  kernel: string | null;
  discovered: boolean;
  supported: boolean | null;
  supportReason: string | null;
}

describe('discovery reports and refresh over the heartbeat', () => {
  let vault: LiveVault;
  let owner: string;
  let serverId: string;
  let credential: string;

  before(async () => {
    vault = await startLiveVault('discovery');
    owner = vault.ownerToken;
    ({ serverId, credential } = await vault.registerServer());
  });
  after(async () => {
    await vault.stop();
  });

  const heartbeat = (body: Record<string, unknown> = {}, token = credential) =>
    vault.call('POST', `/api/v1/config-servers/${serverId}/heartbeat`, token, { version: '0.1.0', clock: new Date().toISOString(), ...body });
  const machines = async (): Promise<Map<string, MachineJson>> => {
    const r = await vault.call('GET', `/api/v1/machines?configServerId=${serverId}&limit=500`, owner);
    assert.equal(r.status, 200, r.text);
    return new Map((r.json.items as MachineJson[]).map((m) => [m.name, m]));
  };

  it('upserts reported machines as discovered, with the OS check, matched by name; absent machines stay', async () => {
    const manual = await vault.call('POST', '/api/v1/machines', owner, { configServerId: serverId, name: 'db-01', privateIp: '10.0.0.20', os: 'debian-12' });
    assert.equal(manual.status, 201, manual.text);
    assert.equal(manual.json.discovered, false);

    const first = await heartbeat({
      discovered: [
        { name: 'web-01', privateIp: '10.0.0.11', os: 'ubuntu-22.04', kernel: '5.15.0-91-generic' },
        { name: 'old-01', privateIp: '10.0.0.12', os: 'centos-7', kernel: '3.10.0-1160.el7.x86_64' },
        { name: 'db-01', privateIp: '10.0.0.21', os: 'debian-12', kernel: '6.1.0-18-amd64' },
      ],
    });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.refreshRequested, false);
    assert.deepEqual(first.json.discovery, { created: 2, updated: 1, unchanged: 0 });

    let listed = await machines();
    const web = listed.get('web-01');
    assert.ok(web);
    assert.equal(web.discovered, true);
    assert.equal(web.supported, true);
    assert.equal(web.supportReason, null);
    const old = listed.get('old-01');
    assert.ok(old);
    assert.equal(old.discovered, true);
    assert.equal(old.supported, false);
    assert.match(String(old.supportReason), /CentOS is not supported/);
    const db = listed.get('db-01');
    assert.ok(db);
    assert.equal(db.id, manual.json.id, 'matched by name: the same machine, not a second one');
    assert.equal(db.privateIp, '10.0.0.21');
    assert.equal(db.kernel, '6.1.0-18-amd64');
    assert.equal(db.discovered, true);
    assert.equal(db.supported, true);

    // A later report without db-01 and old-01, and web-01 without a kernel: nothing is deleted,
    // the kernel the vault knows is kept, and an identical machine is not rewritten.
    const second = await heartbeat({ discovered: [{ name: 'web-01', privateIp: '10.0.0.11', os: 'ubuntu-22.04' }] });
    assert.equal(second.status, 200, second.text);
    assert.deepEqual(second.json.discovery, { created: 0, updated: 0, unchanged: 1 });
    listed = await machines();
    assert.deepEqual([...listed.keys()].sort(), ['db-01', 'old-01', 'web-01']);
    assert.equal(listed.get('web-01')?.kernel, '5.15.0-91-generic');
    assert.deepEqual(listed.get('old-01'), old, 'a machine missing from a report is left exactly as it was');

    // An upgrade is picked up: the OS check runs again on the reported OS.
    const upgraded = await heartbeat({ discovered: [{ name: 'old-01', privateIp: '10.0.0.12', os: 'rocky-9.3', kernel: '5.14.0-362.el9.x86_64' }] });
    assert.deepEqual(upgraded.json.discovery, { created: 0, updated: 1, unchanged: 0 });
    const now = (await machines()).get('old-01');
    assert.equal(now?.supported, true);
    assert.equal(now?.supportReason, null);

    // A heartbeat without a report says nothing about discovery.
    const plain = await heartbeat();
    assert.equal(plain.status, 200, plain.text);
    assert.equal(plain.json.discovery, undefined);
  });

  it('refresh: heartbeat answers say refreshRequested until a heartbeat brings a discovery report', async () => {
    assert.equal((await heartbeat()).json.refreshRequested, false, 'nothing pending yet');
    const refreshed = await vault.call('POST', `/api/v1/config-servers/${serverId}/refresh`, owner, {});
    assert.equal(refreshed.status, 200, refreshed.text);
    const requestedAt = Date.parse(String(refreshed.json.lastRefreshAt));
    assert.ok(Math.abs(requestedAt - Date.now()) < 60_000, refreshed.text);

    for (let i = 0; i < 2; i++) {
      const hb = await heartbeat();
      assert.equal(hb.status, 200, hb.text);
      assert.equal(hb.json.refreshRequested, true, 'stays pending over heartbeats without a report');
    }
    const shown = await vault.call('GET', `/api/v1/config-servers/${serverId}`, owner);
    assert.equal(shown.json.lastRefreshAt, refreshed.json.lastRefreshAt, 'lastRefreshAt is the time of the request');

    const report = await heartbeat({ discovered: [] });
    assert.equal(report.status, 200, report.text);
    assert.equal(report.json.refreshRequested, false, 'the report is the moment discovery ran');
    assert.deepEqual(report.json.discovery, { created: 0, updated: 0, unchanged: 0 });
    assert.equal((await heartbeat()).json.refreshRequested, false, 'cleared');

    const unknown = await vault.call('POST', '/api/v1/config-servers/no-such-server/refresh', owner, {});
    assert.equal(unknown.status, 404, unknown.text);
  });

  it('refuses oversized and invalid reports with 400 VALIDATION and stores none of them', async () => {
    const before = await machines();
    const entry = (i: number) => ({ name: `m${i}`, privateIp: '10.1.0.1', os: 'debian-12' });
    const bad: [string, unknown][] = [
      ['10,001 machines', Array.from({ length: 10_001 }, (_, i) => entry(i))],
      ['not an IP', [entry(1), { name: 'x-01', privateIp: 'not-an-ip', os: 'debian-12' }]],
      ['a name twice', [entry(1), entry(1)]],
      ['a missing os', [{ name: 'x-02', privateIp: '10.1.0.2' }]],
      ['an unknown field', [{ ...entry(3), password: 'hunter2' }]],
      ['a bad name', [{ name: '../etc', privateIp: '10.1.0.3', os: 'debian-12' }]],
      ['an empty kernel', [{ ...entry(4), kernel: '' }]],
      ['not an array', { name: 'x', privateIp: '10.1.0.4', os: 'debian-12' }],
    ];
    for (const [what, discovered] of bad) {
      const r = await heartbeat({ discovered });
      assert.equal(r.status, 400, `${what}: ${r.text}`);
      assert.equal(r.json.code, 'VALIDATION', `${what}: ${r.text}`);
      assert.ok(Array.isArray(r.json.errors) && r.json.errors.length > 0, `${what}: names the failing fields`);
    }
    const ipError = await heartbeat({ discovered: [entry(1), { name: 'x-01', privateIp: '999.1.1.1', os: 'debian-12' }] });
    assert.deepEqual(ipError.json.errors, [{ in: 'body', field: '/discovered/1/privateIp', message: 'must be an IPv4 or IPv6 address' }]);
    assert.deepEqual([...(await machines()).keys()].sort(), [...before.keys()].sort(), 'a refused report changes nothing');

    // The bound itself is accepted.
    const full = await heartbeat({ discovered: Array.from({ length: 10_000 }, (_, i) => ({ name: `bulk-${i}`, privateIp: `10.2.${i >> 8}.${i & 255}`, os: 'debian-12' })) });
    assert.equal(full.status, 200, full.text.slice(0, 500));
    assert.deepEqual(full.json.discovery, { created: 10_000, updated: 0, unchanged: 0 });
  });

  it('only the configuration server itself may send a discovery report', async () => {
    const tokens = await vault.tokensByRole();
    for (const [role, token] of Object.entries(tokens)) {
      const r = await heartbeat({ discovered: [{ name: 'evil-01', privateIp: '10.9.9.9', os: 'debian-12' }] }, token);
      assert.equal(r.status, 403, `${role}: ${r.text}`);
      assert.equal(r.json.code, 'FORBIDDEN');
    }
    const other = await vault.registerServer();
    const r = await vault.call('POST', `/api/v1/config-servers/${serverId}/heartbeat`, other.credential, {
      version: '0.1.0',
      clock: new Date().toISOString(),
      discovered: [{ name: 'evil-01', privateIp: '10.9.9.9', os: 'debian-12' }],
    });
    assert.equal(r.status, 403, r.text);
    assert.equal((await heartbeat({}, 'lbs_not-a-real-credential-at-all-xxxxxxxxxxxxxxxx')).status, 401);
    assert.equal(await vault.server.repos.machines.findByName(serverId, 'evil-01'), undefined, 'nothing stored from a refused report');
  });
});
