/**
 * The acceptance path of continuous replication, through the CLI only, with real
 * processes: `lifeboat server` (vault + built-in process server + replica processor),
 * a vault on a local store, a policy cutting every 2 s, a machine enabled with a manual
 * install, `lifeboat agent enroll` + `lifeboat agent run` protecting a disk image with
 * the journal tracker (the agent serves the image over NBD), fio writing random
 * 4–64 KiB blocks through it and a record writer acknowledging numbered records beside
 * it. Recovery points appear every few seconds; a point taken under load, restored with
 * `lifeboat disk restore`, holds every record acknowledged before its capture time and
 * nothing torn; after the load stops the newest point equals the image byte for byte,
 * and the store verifies clean.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NbdClient } from '../../src/nbd/client.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { BIN, lifeboat, lifeboatServe, stop, type CliResult } from '../helpers/cli.js';
import { startFio } from '../helpers/fio.js';
import { RecordWriter, verifyImage } from '../helpers/workload.js';

const MiB = 2 ** 20;
const DISK_BYTES = 256 * MiB;
/** fio writes below this offset; the record writer above it. */
const FIO_REGION = 192 * MiB;

interface PointRow {
  pointId: string;
  disk: string;
  createdAt: string;
  capturedAt?: string;
  consistency: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

describe('continuous replication from the CLI: server + agent under fio load', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: Awaited<ReturnType<typeof lifeboatServe>>;
  let agent: ChildProcess | undefined;
  let agentLog = '';
  let serverLog = '';
  const env: Record<string, string> = {};

  const cli = (args: string[]): CliResult => lifeboat(args, env);
  const ok = (args: string[]): CliResult => {
    const r = cli(args);
    assert.equal(r.status, 0, `lifeboat ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r;
  };

  before(async () => {
    requireTool('fio', 'fio');
    tmp = makeTempDir('continuous');
    Object.assign(env, { LIFEBOAT_CONFIG_DIR: join(tmp.path, 'config'), LIFEBOAT_SERVER: '', LIFEBOAT_TOKEN: '', LIFEBOAT_PROFILE: '' });
    server = await lifeboatServe(['server', '--data-dir', join(tmp.path, 'vault'), '--listen', '127.0.0.1:0', '--process-server-port', '0', '--json'], env);
    server.child.stderr?.on('data', (d: Buffer) => (serverLog = (serverLog + d.toString()).slice(-20_000)));
  });
  after(async () => {
    if (agent && agent.exitCode === null) {
      agent.kill('SIGKILL');
      await new Promise((r) => agent?.once('exit', r));
    }
    if (server) await stop(server.child);
    tmp?.cleanup();
  });

  it('ships changes within seconds; points restore to the source at their moment', async () => {
    const url = String(server.json.url);
    assert.ok(Number(server.json.processServerPort) > 0, 'the built-in process server listens');
    ok(['login', '--server', url, '--token', String(server.json.adminToken)]);

    const passFile = join(tmp.path, 'store.pass');
    writeFileSync(passFile, 'continuous-Replication-passphrase-1\n', { mode: 0o600 });
    const store = `file://${join(tmp.path, 'store')}`;
    ok(['vault', 'create', 'west', '--location', 'west', '--store', store, '--passphrase-file', passFile]);
    const keyFile = join(tmp.path, 'reg.key');
    ok(['registration-key', 'create', '--vault', 'west', '--out', keyFile]);
    ok(['config-server', 'register', '--key', keyFile, '--name', 'cs-1', '--address', '127.0.0.1', '--credential-out', join(tmp.path, 'cs.cred'), '--server', url]);
    ok(['policy', 'create', '--vault', 'west', 'seconds', '--rpo-threshold', '30s', '--retention', '24h', '--app-consistent', 'off', '--crash-consistent', '2s']);
    ok(['machine', 'add', '--config-server', 'cs-1', 'web-1', '--ip', '127.0.0.1', '--os', 'debian-12']);
    const enabled = ok(['replication', 'enable', '--vault', 'west', '--policy', 'seconds', '--config-server', 'cs-1', '--manual-install', 'web-1', '--json']).json() as {
      items: { id: string }[];
      jobs: { id: string }[];
    };
    const itemId = (enabled.items[0] as { id: string }).id;
    const jobId = (enabled.jobs[0] as { id: string }).id;
    const disk = `${itemId}.sda`;

    // The protected disk: sparse, with some data already on it.
    const image = join(tmp.path, 'disk.img');
    writeFileSync(image, '');
    await truncate(image, DISK_BYTES);
    const fd = openSync(image, 'r+');
    for (let i = 0; i < 16; i++) writeSync(fd, createHash('sha512').update(`seed ${i}`).digest().subarray(0, 64).toString('hex').repeat(64), i * 4 * MiB);
    closeSync(fd);
    const socketPath = join(tmp.path, 'sda.sock');
    const config = join(tmp.path, 'agent.json');
    writeFileSync(config, JSON.stringify({ disks: [{ name: 'sda', tracker: { kind: 'journal', path: image, socketPath } }] }));
    const stateDir = join(tmp.path, 'agent-state');
    const tokenFile = join(tmp.path, 'enroll.token');
    writeFileSync(tokenFile, `${String(ok(['item', 'enroll-token', itemId, '--json']).json().token)}\n`, { mode: 0o600 });
    ok(['agent', 'enroll', '--vault', url, '--item', itemId, '--token-file', tokenFile, '--config', config, '--state-dir', stateDir]);

    agent = spawn(process.execPath, [BIN, 'agent', 'run', '--config', config, '--state-dir', stateDir, '--json'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    agent.stdout?.on('data', (d: Buffer) => (agentLog = (agentLog + d.toString()).slice(-20_000)));
    agent.stderr?.on('data', (d: Buffer) => (agentLog = (agentLog + d.toString()).slice(-20_000)));

    const watched = ok(['job', 'watch', jobId]);
    assert.match(watched.stdout, /^state:\s+succeeded/m, watched.stdout);
    const item = () => ok(['item', 'show', itemId, '--json']).json() as { state: string; rpoSeconds: number | null };
    await until('the item to be protected (initial replication done)', () => (item().state === 'protected' ? true : undefined), 120_000);
    await until('the agent NBD export', () => (existsSync(socketPath) ? true : undefined), 30_000);

    const points = (): PointRow[] => JSON.parse(ok(['point', 'list', '--disk', disk, '--store', store, '--passphrase-file', passFile, '--json']).stdout) as PointRow[];
    const before = points().length;

    // Load: fio at 10 MB/s below FIO_REGION, acknowledged records above it.
    const fio = startFio({ target: { nbdUri: `nbd+unix:///?socket=${socketPath}`, sizeBytes: FIO_REGION }, rateMBPerSec: 10, fsyncEveryWrites: 32 });
    const nbd = await NbdClient.connect({ target: { socketPath }, exportName: '' });
    const writer = new RecordWriter(
      async (offset, block) => {
        await nbd.write(offset, block);
        await nbd.flush();
      },
      { seed: 4242, slotCount: 4096, offsetBytes: FIO_REGION },
    );
    const writing = new AbortController();
    // Settled at once so a failure below cannot leave an unhandled rejection behind.
    const records = writer.run({ signal: writing.signal }).catch((err: unknown) => err);
    const stopLoad = async () => {
      writing.abort();
      await records;
      const result = await fio.stop();
      await writer.close().catch(() => undefined);
      await nbd.close().catch(() => undefined);
      return result;
    };
    try {
      const loadStarted = Date.now();
      await sleep(20_000);
      const underLoad = points().filter((p) => Date.parse(p.capturedAt ?? p.createdAt) > loadStarted);
      // Points every few seconds under load (policy: a cut every 2 s).
      assert.ok(underLoad.length >= 4, `only ${underLoad.length} points in 20 s of load (${points().length - before} new in all)\n${agentLog.slice(-3000)}`);
      // Seconds, not minutes (the lag itself is measured by the benchmarks, not here).
      const rpo = item().rpoSeconds;
      assert.ok(rpo !== null && rpo < 60, `RPO under load is ${rpo} s`);

      // A point taken under load holds every record acknowledged before its moment.
      const mid = underLoad[underLoad.length - 2] as PointRow;
      const midImage = join(tmp.path, 'mid.img');
      ok(['disk', 'restore', mid.pointId, '--to', midImage, '--store', store, '--passphrase-file', passFile]);
      const capturedMs = Date.parse(mid.capturedAt as string);
      const report = await verifyImage(midImage, writer.acked, { upToTime: capturedMs });
      assert.ok(report.ok);
      assert.ok(writer.acked.records.filter((r) => r.ackedAtMs < capturedMs).length > 10, 'records were acknowledged before the point');

    } catch (err) {
      await stopLoad();
      throw err;
    }
    const fioResult = await stopLoad();
    assert.ok(fioResult.bytesWritten > 50 * MiB, `fio wrote ${fioResult.bytesWritten} bytes`);
    const quiet = Date.now();

    // The load stopped: the newest point equals the image.
    const last = await until('a point after the load stopped', () => points().find((p) => Date.parse(p.capturedAt ?? p.createdAt) > quiet + 500), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; newest: ${JSON.stringify(points().slice(-2))}\nagent:\n${agentLog.slice(-4000)}\nserver:\n${serverLog.slice(-4000)}`);
    });
    const lastImage = join(tmp.path, 'last.img');
    ok(['disk', 'restore', last.pointId, '--to', lastImage, '--store', store, '--passphrase-file', passFile]);
    const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
    assert.equal(sha(lastImage), sha(image), 'the newest point equals the source disk');
    await verifyImage(lastImage, writer.acked);

    const verified = ok(['store', 'verify', '--store', store, '--passphrase-file', passFile, '--json']).json() as { ok?: boolean; problems?: unknown[] };
    assert.notEqual(verified.ok, false, JSON.stringify(verified));

    agent.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => agent?.once('exit', r));
    assert.equal(code, 0, agentLog.slice(-2000));
  });
});
