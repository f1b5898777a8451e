import { rm, stat } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import type { BlockSource } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';
import { serveConnection } from './connection.js';
import { ExportTable } from './export-table.js';
import type { NbdLogger } from './log.js';
import { errorFields, silentLogger } from './log.js';

export type { NbdLogger, NbdLogLevel } from './log.js';
export type { WritableBlockTarget } from './writable-target.js';

/** Where to listen: TCP (default 127.0.0.1, port 0 picks a free port) or a Unix socket path. */
export type NbdListen = { readonly host?: string; readonly port?: number } | { readonly socketPath: string };

export interface NbdServerOptions {
  /**
   * Export name -> source. A WritableBlockTarget (`writable: true`) makes a
   * writable export; any other BlockSource a read-only one. Sources are
   * borrowed: close() does not close them.
   */
  readonly exports: ReadonlyMap<string, BlockSource> | Readonly<Record<string, BlockSource>>;
  readonly listen?: NbdListen;
  readonly logger?: NbdLogger;
  /** Requests one connection may have in flight; further requests wait unread. Default 16. */
  readonly maxInflightRequests?: number;
  /** Deadline from accept to the end of option haggling. Default 30 s. */
  readonly handshakeTimeoutMs?: number;
}

export type NbdAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly socketPath: string };

export interface NbdServerStats {
  /** Connections open right now. */
  readonly activeConnections: number;
  /** Connections accepted since start. */
  readonly totalConnections: number;
  /** Connections ended because the client broke the protocol. */
  readonly protocolErrors: number;
}

export interface NbdServer {
  readonly address: NbdAddress;
  /** `nbd://HOST:PORT/NAME` or `nbd+unix:///NAME?socket=PATH`, as qemu and libnbd accept them. */
  uri(exportName: string): string;
  stats(): NbdServerStats;
  /**
   * Stops accepting, hard-disconnects every client, and resolves once no request
   * is still running against any source (so the caller may close them). Writes
   * not yet answered may or may not have been applied, as with any disconnect. Idempotent.
   */
  close(): Promise<void>;
}

/** Protocol limits; fixed because they are advertised to clients and documented in docs/nbd.md. */
export const NBD_LIMITS = Object.freeze({
  maxBlockBytes: 32 * 1024 * 1024,
  preferredBlockBytes: 4096,
  maxOptionBytes: 64 * 1024,
  maxOptions: 1024,
  readHighWaterBytes: 4 * 1024 * 1024,
});

/**
 * Starts an NBD server (fixed newstyle, structured replies, base:allocation;
 * read-only exports, and writable ones for WritableBlockTargets; see docs/nbd.md). Resolves once listening. Rejects with
 * CONFIG_INVALID for bad options or when the address cannot be bound.
 */
export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const exports = new ExportTable(
    options.exports instanceof Map ? options.exports : new Map(Object.entries(options.exports)),
  );
  const log = options.logger ?? silentLogger;
  const maxInflightRequests = positiveInteger('maxInflightRequests', options.maxInflightRequests ?? 16);
  const handshakeTimeoutMs = positiveInteger('handshakeTimeoutMs', options.handshakeTimeoutMs ?? 30_000);
  const listen = options.listen ?? {};

  const sockets = new Set<Socket>();
  const sessions = new Set<Promise<void>>();
  let totalConnections = 0;
  let protocolErrors = 0;

  const server = createServer((socket) => {
    totalConnections++;
    const connectionId = totalConnections;
    sockets.add(socket);
    const session = serveConnection(socket, {
      ...NBD_LIMITS,
      exports,
      log,
      connectionId,
      maxInflightRequests,
      handshakeTimeoutMs,
      onProtocolError: () => protocolErrors++,
    }).finally(() => {
      sockets.delete(socket);
      sessions.delete(session);
    });
    sessions.add(session);
  });

  const address = await bind(server, listen);
  server.on('error', (err) => log('error', 'nbd server error', errorFields(err)));
  log('info', 'nbd server listening', { ...address, exports: exports.list().map((e) => e.name) });

  let closing: Promise<void> | null = null;
  return {
    address,
    uri: (exportName) => formatUri(address, exportName),
    stats: () => ({ activeConnections: sockets.size, totalConnections, protocolErrors }),
    close: () => {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await Promise.allSettled([...sessions]);
        await closed;
        log('info', 'nbd server closed', { totalConnections });
      })();
      return closing;
    },
  };
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new LifeboatError('CONFIG_INVALID', `NBD server option ${name} must be a positive integer`, {
      details: { [name]: value },
    });
  }
  return value;
}

async function bind(server: Server, listen: NbdListen): Promise<NbdAddress> {
  try {
    return await bindOnce(server, listen);
  } catch (err) {
    // A socket file left by a killed process: nobody answers on it, so it may be replaced.
    if (!('socketPath' in listen) || !(await isStaleSocket(listen.socketPath))) throw err;
    await rm(listen.socketPath, { force: true });
    return bindOnce(server, listen);
  }
}

/** True when `path` is a Unix socket that refuses connections (its server is gone). */
async function isStaleSocket(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isSocket()) return false;
  } catch {
    return false;
  }
  return new Promise<boolean>((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(false);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

function bindOnce(server: Server, listen: NbdListen): Promise<NbdAddress> {
  return new Promise<NbdAddress>((resolve, reject) => {
    const onError = (err: Error): void =>
      reject(new LifeboatError('CONFIG_INVALID', 'NBD server cannot listen on the address', { cause: err, details: { ...listen } }));
    server.once('error', onError);
    const onListening = (): void => {
      server.off('error', onError);
      const bound = server.address();
      if ('socketPath' in listen) resolve({ kind: 'unix', socketPath: listen.socketPath });
      else if (bound !== null && typeof bound === 'object') resolve({ kind: 'tcp', host: bound.address, port: bound.port });
      else reject(new LifeboatError('INTERNAL', 'TCP server has no address after listening'));
    };
    if ('socketPath' in listen) server.listen({ path: listen.socketPath }, onListening);
    else server.listen({ host: listen.host ?? '127.0.0.1', port: listen.port ?? 0 }, onListening);
  });
}

/** Percent-encodes each path segment but keeps '/', which both qemu and libnbd read literally. */
function encodePath(text: string): string {
  return text.split('/').map(encodeURIComponent).join('/');
}

function formatUri(address: NbdAddress, exportName: string): string {
  if (address.kind === 'unix') return `nbd+unix:///${encodePath(exportName)}?socket=${encodePath(address.socketPath)}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${encodePath(exportName)}`;
}
