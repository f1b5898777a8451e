/**
 * `lifeboat quickstart` end to end, from source: the store walkthrough, then an
 * all-in-one vault protecting the sample disk with an in-process agent and a drill
 * (test failover at the newest point, cleaned up). The printed report names a point
 * the vault's store really holds, with its RPO, the driver and the outcome. With QEMU
 * the test machine boots under it; with nothing on PATH (a machine without QEMU) the
 * export driver writes the disk instead. `--json` prints exactly one JSON document;
 * a second run reuses the store.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { DrillReport } from '../../src/core/model.js';
import { makeTempDir, repoRoot, requireTool } from '../helpers/env.js';

const CLI = join(repoRoot, 'test', 'agent', 'lifeboat-cli.ts');
const POINT_ID = /^[0-9A-Z]{26}$/;

function quickstart(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'quickstart', ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('lifeboat quickstart: the drill', () => {
  const tmp = makeTempDir('quickstart');
  after(() => tmp.cleanup());
  const dir = join(tmp.path, 'qs');

  it('protects the sample disk, runs a test failover under QEMU, prints its report and cleans it up', async () => {
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    requireTool('qemu-img', 'qemu-utils');
    const startedMs = Date.now();
    const r = await quickstart(['--dir', dir]);
    assert.equal(r.status, 0, `quickstart exited ${r.status}\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^verify {2}ok/m, r.stdout);
    assert.match(r.stdout, /^agent {3}sample machine protected/m, r.stdout);
    const drill = /^drill {3}test failover of the sample machine: (\w+)/m.exec(r.stdout);
    assert.equal(drill?.[1], 'passed', r.stdout);
    const point = /^ {8}point ([0-9A-Z]{26}) \((\S+), captured (\S+)\)/m.exec(r.stdout);
    assert.ok(point, `no point in the report:\n${r.stdout}`);
    assert.ok(Date.parse(point[3] as string) >= startedMs - 1000, `the drill's point was captured during this run: ${point[3]}`);
    // QEMU is installed: compute `auto` is qemu, and with no boot marker "booted" means started.
    assert.match(r.stdout, /^ {8}RPO \d+ s, RTO \d+ s, driver qemu \((kvm|tcg)\), network isolated$/m, r.stdout);
    assert.match(r.stdout, /^cleanup test machine removed; drill report \S+ kept/m, r.stdout);
  });

  it('without QEMU (nothing on PATH) the drill exports the disk; --json prints one document whose report names a point in the vault store', async () => {
    const r = await quickstart(['--dir', dir, '--json'], { PATH: '/nonexistent' });
    assert.equal(r.status, 0, `quickstart --json exited ${r.status}\n${r.stdout}\n${r.stderr}`);
    const doc = JSON.parse(r.stdout) as { store: { created: boolean }; drill: { itemId: string; computeDriver: string; report: DrillReport; machineFiles: string[]; machinesLeft: number } };
    assert.equal(doc.store.created, false, 'the second run reuses the store');
    const report = doc.drill.report;
    assert.equal(report.outcome, 'passed', JSON.stringify(report));
    assert.equal(report.operation, 'test-failover');
    assert.equal(doc.drill.computeDriver, 'export');
    assert.equal(report.driver, 'export');
    assert.equal(report.rtoSeconds, null, 'nothing boots');
    assert.ok(doc.drill.machineFiles.length >= 1, 'the export driver wrote the disk');
    assert.equal(report.network, 'isolated');
    assert.ok(report.cleanupJobId, 'the cleanup is recorded on the report');
    assert.match(report.notes ?? '', /quickstart drill/, 'the cleanup kept the notes');
    assert.ok(report.rpoSeconds !== null && report.rpoSeconds >= 0, `RPO ${report.rpoSeconds}`);
    const disks = report.point?.disks ?? [];
    assert.equal(disks.length, 1, JSON.stringify(report.point));
    const chosen = disks[0] as { disk: string; pointId: string };
    assert.match(chosen.pointId, POINT_ID);
    // The point is one the vault's store holds (as `<itemId>.sda`).
    const pointsDir = join(dir, 'drill', 'store', 'points');
    const held = readdirSync(pointsDir).flatMap((d) => readdirSync(join(pointsDir, d)).map((f) => `${d}/${f}`));
    assert.ok(held.some((k) => k.startsWith(`${doc.drill.itemId}.`) && k.endsWith(`/${chosen.pointId}.manifest`)), `${chosen.pointId} not in the store: ${held.join(', ')}`);
    // The driver holds no machine after the cleanup, and the exported files (export driver) are gone.
    assert.equal(doc.drill.machinesLeft, 0);
    for (const f of doc.drill.machineFiles) assert.equal(existsSync(f), false, `${f} outlived the cleanup`);
  });
});
