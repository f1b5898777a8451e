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

/**
 * Azurite with its data on disk, for storage-outage tests: halt() stops the service
 * (gracefully, so it saves its metadata) and keeps its data directory and port; resume()
 * starts it again on the same directory and port, with every blob written before the
 * halt. Between the two, clients get "connection refused", as from a storage account
 * that is down. stop() ends it for good and removes the data.
 */
export interface RestartableAzuriteService extends AzuriteService {
  halt(): Promise<void>;
  resume(): Promise<void>;
  readonly running: boolean;
  /** The data directory (Azurite's --location). */
  readonly dataDir: string;
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

/** Starts Azurite's blob service on a free loopback port with its data in a directory, restartable. */
export async function startRestartableAzurite(): Promise<RestartableAzuriteService> {
  const main = requireNodeModule('azurite/dist/src/blob/main.js', 'azurite');
  const data = makeTempDir('azurite');
  const argsFor = (port: number): string[] => [
    main,
    ...['--blobHost', LOOPBACK, '--blobPort', String(port)],
    ...['--skipApiVersionCheck', '--location', data.path, '--silent', '--loose', '--disableTelemetry'],
  ];
  const first = await startOnFreePort(argsFor, data.path, () => undefined).catch((err: unknown) => {
    data.cleanup();
    throw err;
  });
  const port = first.port;
  let current: { stop: () => Promise<void> } | undefined = first;
  const endpoint = `http://${LOOPBACK}:${port}/${AZURITE_ACCOUNT}`;
  let stopped = false;
  return {
    endpoint,
    dataDir: data.path,
    env: {
      AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT,
      AZURE_STORAGE_KEY: AZURITE_KEY,
      LIFEBOAT_AZURE_ENDPOINT: endpoint,
    },
    url: (container, prefix) => `azblob://${AZURITE_ACCOUNT}/${container}${prefix ? `/${prefix}` : ''}`,
    get running() {
      return current !== undefined;
    },
    async halt() {
      const service = current;
      current = undefined;
      await service?.stop();
    },
    async resume() {
      if (stopped) throw new Error('Azurite was stopped for good: start a new one');
      if (current) return;
      let lastError: unknown;
      // The port is ours only by convention while halted; retry in case the old socket lingers.
      for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        try {
          current = await launch(argsFor(port), data.path, port);
          return;
        } catch (err) {
          lastError = err;
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      }
      throw new Error(`Azurite did not start again on port ${port} with data in ${data.path}: ${String(lastError)}`, { cause: lastError });
    },
    async stop() {
      stopped = true;
      const service = current;
      current = undefined;
      await service?.stop();
      data.cleanup();
    },
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
    try {
      const service = await launch(argsFor(port), cwd, port);
      return {
        port,
        stop: async () => {
          await service.stop();
          cleanup();
        },
      };
    } catch (err) {
      lastError = err;
    }
  }
  cleanup();
  throw lastError;
}

/** Starts a node service and waits until it accepts connections on `port`; stop() leaves its files. */
async function launch(args: string[], cwd: string, port: number): Promise<{ stop: () => Promise<void> }> {
  const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
  const stop = async (): Promise<void> => {
    await kill(child);
    live.delete(child);
  };
  try {
    await waitForPort(port, child);
    return { stop };
  } catch (err) {
    await stop();
    throw new Error(`${String(err)}; stderr: ${stderr.trim() || '(empty)'}`, { cause: err });
  }
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
