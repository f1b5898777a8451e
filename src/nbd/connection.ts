import type { Socket } from 'node:net';
import { isLifeboatError } from '../core/errors.js';
import type { ExportTable } from './export-table.js';
import type { NbdLogger } from './log.js';
import { errorFields } from './log.js';
import type { NegotiationLimits } from './negotiation.js';
import { negotiate } from './negotiation.js';
import { ReplyWriter } from './reply-writer.js';
import { PeerClosedError, SocketReader } from './socket-reader.js';
import { serveTransmission } from './transmission.js';

export interface ConnectionOptions extends NegotiationLimits {
  readonly exports: ExportTable;
  readonly log: NbdLogger;
  readonly connectionId: number;
  readonly maxInflightRequests: number;
  readonly handshakeTimeoutMs: number;
  /** Unread bytes buffered before the socket is paused. */
  readonly readHighWaterBytes: number;
  /** Called once when the client broke the protocol (for server statistics). */
  readonly onProtocolError: () => void;
}

/**
 * Serves one client from greeting to goodbye. Never rejects: every ending
 * (soft disconnect, EOF, protocol violation, socket error) is logged and ends with
 * the socket destroyed and no request still running against the source.
 */
export async function serveConnection(socket: Socket, options: ConnectionOptions): Promise<void> {
  const { log, connectionId } = options;
  socket.on('error', (err) => log('debug', 'nbd socket error', { connectionId, ...errorFields(err) }));
  socket.setNoDelay(true);
  // A deadline for the whole handshake, so a silent or trickling client cannot hold a connection open.
  const handshakeTimer = setTimeout(() => {
    log('warn', 'nbd handshake timed out', { connectionId, handshakeTimeoutMs: options.handshakeTimeoutMs });
    socket.destroy();
  }, options.handshakeTimeoutMs);
  const reader = new SocketReader(socket, options.readHighWaterBytes);
  const writer = new ReplyWriter(socket);
  try {
    const session = await negotiate(reader, writer, options.exports, options);
    clearTimeout(handshakeTimer);
    if (session === null) {
      log('debug', 'nbd client aborted negotiation', { connectionId });
    } else {
      log('info', 'nbd client connected to export', {
        connectionId,
        exportName: session.export.name,
        structuredReplies: session.structuredReplies,
        baseAllocation: session.baseAllocationId !== null,
      });
      await serveTransmission(reader, writer, session, {
        maxBlockBytes: options.maxBlockBytes,
        maxInflightRequests: options.maxInflightRequests,
        log,
        connectionId,
        hangUp: () => socket.destroy(),
      });
      log('debug', 'nbd client disconnected', { connectionId });
    }
    await endGracefully(socket);
  } catch (err) {
    if (err instanceof PeerClosedError) {
      log('debug', 'nbd client closed the connection', { connectionId, ...err.details });
    } else if (isLifeboatError(err, 'NBD_PROTOCOL')) {
      options.onProtocolError();
      log('warn', 'nbd client broke the protocol', { connectionId, ...errorFields(err), ...err.details });
    } else {
      log('error', 'nbd connection failed', { connectionId, ...errorFields(err) });
    }
  } finally {
    clearTimeout(handshakeTimer);
    socket.destroy();
  }
}

/** Flushes what we wrote, sends FIN, and resolves once the socket is closed. */
function endGracefully(socket: Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    socket.once('close', () => resolve());
    socket.end(() => socket.destroy());
  });
}
