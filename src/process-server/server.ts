import { createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { LifeboatError } from '../core/errors.js';
import { encodeFrame, FrameType } from '../protocol/frame.js';
import { DEFAULT_PORT } from '../protocol/messages.js';
import { silentLogger, type ProcessServerBackend, type ProcessServerLogger } from './backend.js';
import { SealPool } from './seal-pool.js';
import { peerIdentity, Session, type SessionContext } from './session.js';
import { Spool } from './spool.js';
import { Uploader } from './uploader.js';

export type { AgentGrant, ProcessServerBackend, ProcessServerLogger } from './backend.js';

export interface ProcessServerOptions {
  /** Address to listen on (default all interfaces). */
  readonly host?: string;
  /** 0 picks a free port; default 9443. */
  readonly port?: number;
  /** The process server's certificate and key, and the vault CA agents' certificates must chain to. */
  readonly tls: { readonly certPem: string; readonly keyPem: string; readonly caPem: string };
  readonly spoolDir: string;
  readonly spoolLimitBytes: number;
  /** Seal worker threads (default 2). */
  readonly workers?: number;
  readonly backend: ProcessServerBackend;
  /** Milliseconds since the epoch (default Date.now): HELLO's clock check and the stats. */
  readonly now?: () => number;
  readonly logger?: ProcessServerLogger;
  /** Segments uploaded at once (default 2); each holds one sealed segment in memory. */
  readonly uploadConcurrency?: number;
  /** First retry delay of a failed upload, doubled per attempt up to uploadRetryMaxMs (defaults 500 ms, 30 s). */
  readonly uploadRetryBaseMs?: number;
  readonly uploadRetryMaxMs?: number;
  /** A connection that sends nothing for this long is closed (default 60 s; agents PING every 10 s). */
  readonly idleTimeoutMs?: number;
}

export interface ProcessServerStats {
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Segments acknowledged. */
  readonly segmentsIn: number;
  readonly segmentsUploaded: number;
  readonly spoolUsedBytes: number;
  readonly spoolLimitBytes: number;
  /** 'warning' from 80 % of the limit, 'full' at the limit (new segments get SPOOL_FULL). */
  readonly spoolState: 'ok' | 'warning' | 'full';
  /** Segments in the spool, not yet in the store. */
  readonly spooledSegments: number;
  /** Age of the oldest spooled segment (0 when the spool is empty). */
  readonly uploadLagMs: number;
  readonly connectedAgents: number;
  readonly uploadErrors: number;
  readonly lastUploadError: string | null;
}

export interface ProcessServer {
  readonly port: number;
  stats(): ProcessServerStats;
  /** Resolves when every spooled segment is in the store (or stuck: see lastUploadError). For tests and shutdown. */
  drained(): Promise<void>;
  /** Stops listening, closes the connections, lets the uploads under way finish; the rest stays in the spool. */
  close(): Promise<void>;
}

function resolveOptions(o: ProcessServerOptions) {
  const positive = (value: number | undefined, fallback: number, name: string, min = 1): number => {
    const v = value ?? fallback;
    if (!Number.isSafeInteger(v) || v < min) throw new LifeboatError('CONFIG_INVALID', `${name} must be an integer ≥ ${min}`, { details: { [name]: v } });
    return v;
  };
  return Object.freeze({
    host: o.host,
    port: positive(o.port, DEFAULT_PORT, 'port', 0),
    workers: positive(o.workers, 2, 'workers'),
    uploadConcurrency: positive(o.uploadConcurrency, 2, 'uploadConcurrency'),
    spoolLimitBytes: positive(o.spoolLimitBytes, 0, 'spoolLimitBytes'),
    uploadRetryBaseMs: positive(o.uploadRetryBaseMs, 500, 'uploadRetryBaseMs'),
    uploadRetryMaxMs: positive(o.uploadRetryMaxMs, 30_000, 'uploadRetryMaxMs'),
    idleTimeoutMs: positive(o.idleTimeoutMs, 60_000, 'idleTimeoutMs'),
    now: o.now ?? Date.now,
    logger: o.logger ?? silentLogger,
  });
}

/**
 * Starts a process server (docs/replication.md): a TLS 1.3 listener that
 * requires agent certificates from the vault CA, sessions that spool and
 * acknowledge segments, and the uploader that moves the spool into the vaults'
 * stores. The spool a previous process left (even one killed with SIGKILL) is
 * recovered first: temp files removed, acknowledged segments queued for upload.
 */
export async function startProcessServer(options: ProcessServerOptions): Promise<ProcessServer> {
  const o = resolveOptions(options);
  const { spool, recovery } = await Spool.open(options.spoolDir, o.spoolLimitBytes);
  if (recovery.entries.length > 0 || recovery.removedTempFiles > 0 || recovery.removedUnacked > 0) {
    o.logger.info(
      { spoolDir: options.spoolDir, segments: recovery.entries.length, removedTempFiles: recovery.removedTempFiles, removedUnacked: recovery.removedUnacked },
      'spool recovered',
    );
  }
  for (const path of recovery.unknown) o.logger.warn({ path }, 'unknown file in the spool left alone');
  const pool = new SealPool(o.workers);
  const uploader = new Uploader({
    spool,
    pool,
    backend: options.backend,
    logger: o.logger,
    concurrency: o.uploadConcurrency,
    retryBaseMs: o.uploadRetryBaseMs,
    retryMaxMs: o.uploadRetryMaxMs,
  });
  for (const entry of recovery.entries) uploader.enqueue(entry);

  const counters = { bytesIn: 0, bytesOut: 0, segmentsIn: 0 };
  const sessions = new Set<Session>();
  const owners = new Map<string, Session>();
  let warned = false;
  let nextSessionId = 1;

  const ctx: SessionContext = {
    spool,
    backend: options.backend,
    logger: o.logger,
    now: o.now,
    counters,
    async claim(session, disks) {
      const previous = new Set<Session>();
      for (const disk of disks) {
        const old = owners.get(disk);
        if (old && old !== session) previous.add(old);
        owners.set(disk, session);
      }
      await Promise.all([...previous].map((old) => old.replaced([...old.disksOwned].find((d) => disks.includes(d)) ?? disks[0] ?? '')));
    },
    release(session) {
      sessions.delete(session);
      for (const [disk, owner] of owners) if (owner === session) owners.delete(disk);
    },
    spooled(entry) {
      uploader.enqueue(entry);
      const used = spool.usedBytes / o.spoolLimitBytes;
      if (used >= 0.8 && !warned) {
        warned = true;
        o.logger.warn({ spoolUsedBytes: spool.usedBytes, spoolLimitBytes: o.spoolLimitBytes }, 'spool above 80 % of its limit');
      } else if (used < 0.7) warned = false;
    },
  };

  // Certificates are checked here, not by rejectUnauthorized: Node drops a refused TLS 1.3
  // client without a word, and an agent must learn why (AGENT_UNAUTHORIZED) instead of
  // retrying a "connection closed" forever. An unauthorized peer gets one ERROR frame and
  // not one of its bytes is parsed.
  const server = createServer({
    cert: options.tls.certPem,
    key: options.tls.keyPem,
    ca: options.tls.caPem,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3',
    // An agent that ends its side mid-frame still gets its ERROR (PROTOCOL_INVALID, truncated).
    allowHalfOpen: true,
  });
  server.on('tlsClientError', (err, socket) => {
    o.logger.warn({ err: err.message, code: (err as NodeJS.ErrnoException).code, remote: socket.remoteAddress }, 'agent TLS handshake failed');
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    socket.setNoDelay(true);
    socket.setTimeout(o.idleTimeoutMs, () => socket.destroy());
    const identity = socket.authorized ? peerIdentity(socket) : undefined;
    if (!identity) {
      const reason = socket.authorized ? 'it is not an agent certificate (CN agent-<machineId>)' : `${socket.authorizationError ?? 'no certificate'}`;
      o.logger.warn({ remote: socket.remoteAddress, reason }, 'agent certificate refused');
      socket.on('error', () => undefined);
      socket.on('data', () => undefined); // dropped unparsed: closing with unread data would reset the connection and lose the ERROR
      socket.end(Buffer.concat(encodeFrame(FrameType.ERROR, { code: 'AGENT_UNAUTHORIZED', message: `the client certificate was refused: ${reason}` })));
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    const session = new Session(socket, ctx, identity, nextSessionId++);
    sessions.add(session);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  o.logger.info({ port, spoolDir: options.spoolDir, spoolLimitBytes: o.spoolLimitBytes, workers: o.workers }, 'process server listening');

  return {
    port,
    stats(): ProcessServerStats {
      const oldest = uploader.oldestSpooledAtMs();
      const used = spool.usedBytes;
      return {
        bytesIn: counters.bytesIn,
        bytesOut: counters.bytesOut,
        segmentsIn: counters.segmentsIn,
        segmentsUploaded: uploader.segmentsUploaded,
        spoolUsedBytes: used,
        spoolLimitBytes: o.spoolLimitBytes,
        spoolState: used >= o.spoolLimitBytes ? 'full' : used >= 0.8 * o.spoolLimitBytes ? 'warning' : 'ok',
        spooledSegments: uploader.pending,
        uploadLagMs: oldest === undefined ? 0 : Math.max(0, o.now() - oldest),
        connectedAgents: [...sessions].filter((s) => s.ready).length,
        uploadErrors: uploader.uploadErrors,
        lastUploadError: uploader.lastUploadError,
      };
    },
    drained: () => uploader.drained(),
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.close();
      setTimeout(() => {
        for (const s of sessions) s.socket.destroy();
      }, 500).unref();
      await closed;
      await uploader.stop();
      await pool.close();
    },
  };
}
