import { freePort } from './env.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** A throwaway PostgreSQL cluster on loopback; stop() shuts it down and removes its files. */
export interface RunningPostgres {
  /** postgres:// URL of the database created at start-up. */
  readonly url: string;
  /** Creates another empty database in the cluster and returns its URL. */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

const LOOPBACK = '127.0.0.1';
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;
const START_ATTEMPTS = 3;
const SUPERUSER = 'postgres';

/** Clusters still running, shut down hard if the test process exits without stopping them. */
const live = new Map<ChildProcess, string>();
process.on('exit', () => {
  for (const [child, data] of live) {
    const pid = postmasterPid(data);
    try {
      if (pid !== undefined) process.kill(pid, 'SIGQUIT');
    } catch {
      // already gone
    }
    child.kill('SIGKILL');
  }
});

/** The newest installed server's bin folder; fails naming Debian's package when there is none. */
function serverBin(): string {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => existsSync(join(base, v, 'bin', 'initdb')) && existsSync(join(base, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions[0] === undefined) {
    throw new Error('PostgreSQL server binaries (initdb, postgres) are not installed: apt-get install postgresql (.ci/run installs it)');
  }
  return join(base, versions[0], 'bin');
}

/**
 * initdb refuses to run as root, so as root every server command runs as the
 * `postgres` OS user (created by Debian's package) in a folder it owns.
 */
function asServerUser(command: string, args: string[]): [string, string[]] {
  if (process.getuid?.() !== 0) return [command, args];
  return ['runuser', ['-u', 'postgres', '--', command, ...args]];
}

function serverUid(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const result = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const group = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (result.status !== 0 || group.status !== 0) {
    throw new Error('running as root but there is no postgres OS user: apt-get install postgresql creates it');
  }
  return { uid: Number(result.stdout.trim()), gid: Number(group.stdout.trim()) };
}

/**
 * Creates a cluster in a temporary folder (initdb, trust authentication, loopback
 * only), starts it on a free port, waits until it accepts connections and
 * creates a database `lifeboat`.
 */
export async function startPostgres(): Promise<RunningPostgres> {
  const bin = serverBin();
  const owner = serverUid();
  // Under the system temp folder, not the repository: the postgres user must be able to reach it.
  const root = mkdtempSync(join(tmpdir(), 'lifeboat-pg-'));
  const cleanup = () => rmSync(root, { recursive: true, force: true });
  try {
    if (owner) chownSync(root, owner.uid, owner.gid);
    const data = join(root, 'data');
    const [cmd, args] = asServerUser(join(bin, 'initdb'), ['-D', data, '-U', SUPERUSER, '--auth=trust', '-E', 'UTF8', '--no-sync']);
    const init = spawnSync(cmd, args, { encoding: 'utf8' });
    if (init.status !== 0) throw new Error(`initdb failed (${init.status}): ${init.stderr || init.stdout || String(init.error)}`);
    let lastError: unknown;
    // Another process may take the free port between our probe and the server's bind.
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      const port = await freePort();
      const [pcmd, pargs] = asServerUser(join(bin, 'postgres'), [
        ...['-D', data, '-k', root, '-p', String(port)],
        ...['-c', `listen_addresses=${LOOPBACK}`, '-c', 'fsync=off', '-c', 'max_connections=200'],
      ]);
      const child = spawn(pcmd, pargs, { stdio: ['ignore', 'ignore', 'pipe'] });
      live.set(child, data);
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
      const adminUrl = `postgres://${SUPERUSER}@${LOOPBACK}:${port}/postgres`;
      const stop = async () => {
        await shutdown(child, data);
        live.delete(child);
        cleanup();
      };
      try {
        await waitUntilReady(adminUrl, child);
        const createDatabase = async (name: string): Promise<string> => {
          if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`invalid database name ${name}`);
          const client = new pg.Client({ connectionString: adminUrl });
          await client.connect();
          try {
            await client.query(`CREATE DATABASE ${name}`);
          } finally {
            await client.end();
          }
          return `postgres://${SUPERUSER}@${LOOPBACK}:${port}/${name}`;
        };
        const url = await createDatabase('lifeboat');
        return { url, createDatabase, stop };
      } catch (err) {
        await shutdown(child, data);
        live.delete(child);
        lastError = new Error(`${String(err)}; postgres stderr: ${stderr.trim() || '(empty)'}`);
      }
    }
    throw lastError;
  } catch (err) {
    cleanup();
    throw err;
  }
}

async function waitUntilReady(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last: unknown;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`postgres exited early (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (err) {
      last = err;
      await client.end().catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`postgres did not accept connections within ${START_TIMEOUT_MS} ms: ${String(last)}`);
}

/** Fast shutdown (SIGINT to the postmaster itself, not to runuser), then SIGKILL after a grace period. */
async function shutdown(child: ChildProcess, data: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const postmaster = postmasterPid(data);
  const signal = (sig: NodeJS.Signals) => {
    try {
      if (postmaster !== undefined) process.kill(postmaster, sig);
      else child.kill(sig);
    } catch {
      // already gone
    }
  };
  signal('SIGINT');
  const timer = setTimeout(() => {
    signal('SIGKILL');
    child.kill('SIGKILL');
  }, STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

function postmasterPid(data: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

