import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort, makeTempDir, repoRoot } from './env.js';

/** A storage service a test started; stop() kills it and removes its files. */
export interface RunningService {
  /** Blob or S3 endpoint on loopback. */
  readonly endpoint: string;
  /** Environment a Lifeboat process needs to reach the service. */
  readonly env: Readonly<Record<string, string>>;
  stop(): Promise<void>;
}

export interface AzuriteService extends RunningService {
  /** A store URL for `container`, e.g. azblob://devstoreaccount1/CONTAINER. */
  url(container: string, prefix?: string): string;
}

export interface S3rverService extends RunningService {
  /** A store URL in the bucket created at start-up. */
  url(prefix?: string): string;
  readonly bucket: string;
}

export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
export const S3RVER_KEY = 'S3RVER';

const LOOPBACK = '127.0.0.1';
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;
const START_ATTEMPTS = 3;

/** Starts Azurite's blob service on a free loopback port, data in memory only. */
export async function startAzurite(): Promise<AzuriteService> {
  const main = requireNodeModule('azurite/dist/src/blob/main.js', 'azurite');
  const workspace = makeTempDir('azurite');
  const running = await startOnFreePort((port) => [
    main,
    ...['--blobHost', LOOPBACK, '--blobPort', String(port)],
    ...['--skipApiVersionCheck', '--inMemoryPersistence', '--silent', '--loose', '--disableTelemetry'],
  ], workspace.path, workspace.cleanup);
  const endpoint = `http://${LOOPBACK}:${running.port}/${AZURITE_ACCOUNT}`;
  return {
    endpoint,
    env: {
      AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT,
      AZURE_STORAGE_KEY: AZURITE_KEY,
      LIFEBOAT_AZURE_ENDPOINT: endpoint,
    },
    url: (container, prefix) => `azblob://${AZURITE_ACCOUNT}/${container}${prefix ? `/${prefix}` : ''}`,
    stop: running.stop,
  };
}

/** Starts s3rver on a free loopback port with `bucket` already created. */
export async function startS3rver(bucket = 'lifeboat-test'): Promise<S3rverService> {
  const main = requireNodeModule('s3rver/bin/s3rver.js', 's3rver');
  const data = makeTempDir('s3rver');
  const running = await startOnFreePort((port) => [
    main,
    ...['--address', LOOPBACK, '--port', String(port), '--directory', data.path, '--silent'],
    ...['--configure-bucket', bucket],
  ], data.path, data.cleanup);
  const endpoint = `http://${LOOPBACK}:${running.port}`;
  return {
    endpoint,
    bucket,
    env: {
      AWS_ACCESS_KEY_ID: S3RVER_KEY,
      AWS_SECRET_ACCESS_KEY: S3RVER_KEY,
      AWS_REGION: 'us-east-1',
      LIFEBOAT_S3_ENDPOINT: endpoint,
      LIFEBOAT_S3_PATH_STYLE: 'true',
      // s3rver ignores If-None-Match: say so instead of pretending.
      LIFEBOAT_S3_CONDITIONAL_CREATE: 'false',
      // s3rver lists in folder order, not key order.
      LIFEBOAT_S3_SORT_LISTING: 'true',
    },
    url: (prefix) => `s3://${bucket}${prefix ? `/${prefix}` : ''}`,
    stop: running.stop,
  };
}

function requireNodeModule(relative: string, name: string): string {
  const path = join(repoRoot, 'node_modules', relative);
  if (!existsSync(path)) throw new Error(`${name} is not installed (${path} is missing): run npm ci`);
  return path;
}

/** Children still running, killed if the test process exits without stopping them. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

async function startOnFreePort(
  argsFor: (port: number) => string[],
  cwd: string,
  cleanup: () => void,
): Promise<{ port: number; stop: () => Promise<void> }> {
  let lastError: unknown;
  // Another process may take the free port between our probe and the service's bind.
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const port = await freePort();
    const child = spawn(process.execPath, argsFor(port), { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(child);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
    const stop = async () => {
      await kill(child);
      live.delete(child);
      cleanup();
    };
    try {
      await waitForPort(port, child);
      return { port, stop };
    } catch (err) {
      await kill(child);
      live.delete(child);
      lastError = new Error(`${String(err)}; stderr: ${stderr.trim() || '(empty)'}`);
    }
  }
  cleanup();
  throw lastError;
}


async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`service exited early (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    if (await accepts(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`service did not accept connections on ${LOOPBACK}:${port} within ${START_TIMEOUT_MS} ms`);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: LOOPBACK, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}
