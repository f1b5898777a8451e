import { LifeboatError } from '../core/errors.js';
import { toStatusDescriptors } from './block-status.js';
import type { NbdLogger } from './log.js';
import { errorFields } from './log.js';
import type { NbdSession } from './negotiation.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_REQUEST_MAGIC,
  NbdErrno,
  REQUEST_HEADER_BYTES,
} from './protocol.js';
import type { ReplyWriter } from './reply-writer.js';
import { Slots } from './slots.js';
import type { SocketReader } from './socket-reader.js';
import { blockStatusChunk, errorChunk, offsetDataChunk, simpleReply } from './wire.js';

export interface TransmissionOptions {
  readonly maxBlockBytes: number;
  readonly maxInflightRequests: number;
  readonly log: NbdLogger;
  readonly connectionId: number;
  /** Hard-disconnects the socket; called before waiting for in-flight requests on a violation. */
  readonly hangUp: () => void;
}

interface Request {
  readonly flags: number;
  readonly type: number;
  readonly handle: Buffer;
  readonly offset: bigint;
  readonly length: number;
}

/**
 * Serves requests until NBD_CMD_DISC (resolves once every in-flight reply is
 * written) or until the client breaks the protocol or goes away (rejects, after
 * hanging up and letting in-flight requests settle). Up to `maxInflightRequests`
 * requests run at once and may complete out of order; the client matches replies
 * by handle.
 */
export async function serveTransmission(
  reader: SocketReader,
  writer: ReplyWriter,
  session: NbdSession,
  options: TransmissionOptions,
): Promise<void> {
  const slots = new Slots(options.maxInflightRequests);
  const inflight = new Set<Promise<void>>();
  const start = (reply: Promise<Buffer[]>): void => {
    const task = reply
      .then((parts) => writer.send(parts))
      .catch((err: unknown) => {
        // answer() catches source failures itself; reaching here is a bug, so hang up loudly.
        options.log('error', 'nbd request handler failed', { connectionId: options.connectionId, ...errorFields(err) });
        options.hangUp();
      })
      .finally(() => {
        inflight.delete(task);
        slots.release();
      });
    inflight.add(task);
  };

  try {
    while (true) {
      await slots.acquire();
      const request = parseRequest(await reader.read(REQUEST_HEADER_BYTES));
      if (request.type === NBD_CMD_DISC) {
        slots.release();
        break;
      }
      if (request.type === NBD_CMD_WRITE) {
        if (request.length > options.maxBlockBytes) {
          throw new LifeboatError('NBD_PROTOCOL', 'NBD write payload exceeds the maximum block size', {
            details: { length: request.length },
          });
        }
        await reader.skip(request.length);
      }
      start(answer(request, session, options));
    }
  } catch (err) {
    options.hangUp();
    await Promise.allSettled([...inflight]);
    throw err;
  }
  await Promise.allSettled([...inflight]);
}

function parseRequest(header: Buffer): Request {
  const magic = header.readUInt32BE(0);
  if (magic !== NBD_REQUEST_MAGIC) {
    throw new LifeboatError('NBD_PROTOCOL', 'NBD request has a bad magic', { details: { magic } });
  }
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    handle: Buffer.from(header.subarray(8, 16)),
    offset: header.readBigUInt64BE(16),
    length: header.readUInt32BE(24),
  };
}

/** Builds the complete reply to one request; never throws for source failures (they become EIO). */
async function answer(request: Request, session: NbdSession, options: TransmissionOptions): Promise<Buffer[]> {
  const { handle } = request;
  const fail = (errno: NbdErrno, message: string): Buffer[] =>
    session.structuredReplies ? errorChunk(handle, errno, message) : simpleReply(handle, errno);
  const source = session.export.source;
  const inRange = request.length > 0 && request.offset + BigInt(request.length) <= BigInt(source.sizeBytes);
  const offset = Number(request.offset);

  switch (request.type) {
    case NBD_CMD_READ: {
      if (request.length > options.maxBlockBytes) return fail(NbdErrno.EOVERFLOW, 'read is larger than the maximum block size');
      if (!inRange) return fail(NbdErrno.EINVAL, 'read is empty or beyond the end of the export');
      let data: Buffer;
      try {
        data = await source.read(offset, request.length);
        if (data.length !== request.length) {
          throw new LifeboatError('SOURCE_UNREADABLE', 'block source returned a short read', {
            details: { wanted: request.length, got: data.length },
          });
        }
      } catch (err) {
        logSourceFailure(options, session, 'nbd source read failed', offset, request.length, err);
        return fail(NbdErrno.EIO, 'read failed');
      }
      return session.structuredReplies ? offsetDataChunk(handle, offset, data) : simpleReply(handle, 0, data);
    }
    case NBD_CMD_BLOCK_STATUS: {
      if (session.baseAllocationId === null) return fail(NbdErrno.EINVAL, 'no metadata context was selected');
      if (!inRange) return fail(NbdErrno.EINVAL, 'range is empty or beyond the end of the export');
      try {
        const extents = await source.extents(offset, request.length);
        const one = (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
        return blockStatusChunk(handle, session.baseAllocationId, toStatusDescriptors(extents, offset, request.length, one));
      } catch (err) {
        logSourceFailure(options, session, 'nbd source extents failed', offset, request.length, err);
        return fail(NbdErrno.EIO, 'block status failed');
      }
    }
    case NBD_CMD_FLUSH:
      return simpleReply(handle, 0);
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
      return fail(NbdErrno.EPERM, 'export is read-only');
    default:
      return fail(NbdErrno.EINVAL, 'command not supported');
  }
}

function logSourceFailure(
  options: TransmissionOptions,
  session: NbdSession,
  msg: string,
  offset: number,
  length: number,
  err: unknown,
): void {
  options.log('error', msg, {
    connectionId: options.connectionId,
    exportName: session.export.name,
    offset,
    length,
    ...errorFields(err),
  });
}
