import { LifeboatError, isLifeboatError } from '../core/errors.js';
import { toStatusDescriptors } from './block-status.js';
import type { NbdLogger } from './log.js';
import { errorFields } from './log.js';
import type { NbdSession } from './negotiation.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
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
import type { WritableBlockTarget } from './writable-target.js';

/** Zero buffers handed to write() when a target has no writeZeroes(). */
const ZERO_SLICE_BYTES = 1024 * 1024;

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
      let payload: Buffer | null = null;
      if (request.type === NBD_CMD_WRITE) {
        if (request.length > options.maxBlockBytes) {
          throw new LifeboatError('NBD_PROTOCOL', 'NBD write payload exceeds the maximum block size', {
            details: { length: request.length },
          });
        }
        // Only a write that will be applied is held in memory; the rest is discarded as it arrives.
        if (session.export.writable && inRange(request, session.export.source.sizeBytes)) payload = await reader.readLarge(request.length);
        else await reader.skip(request.length);
      }
      start(answer(request, payload, session, options));
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

function inRange(request: Request, sizeBytes: number): boolean {
  return request.length > 0 && request.offset + BigInt(request.length) <= BigInt(sizeBytes);
}

/**
 * Builds the complete reply to one request; never throws for source failures
 * (they become EIO). `payload` is the write's data, present only for a write to
 * a writable export that lies inside it.
 */
async function answer(request: Request, payload: Buffer | null, session: NbdSession, options: TransmissionOptions): Promise<Buffer[]> {
  const { handle } = request;
  const fail = (errno: NbdErrno, message: string): Buffer[] =>
    session.structuredReplies ? errorChunk(handle, errno, message) : simpleReply(handle, errno);
  const source = session.export.source;
  const inside = inRange(request, source.sizeBytes);
  const offset = Number(request.offset);

  switch (request.type) {
    case NBD_CMD_READ: {
      if (request.length > options.maxBlockBytes) return fail(NbdErrno.EOVERFLOW, 'read is larger than the maximum block size');
      if (!inside) return fail(NbdErrno.EINVAL, 'read is empty or beyond the end of the export');
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
      if (!inside) return fail(NbdErrno.EINVAL, 'range is empty or beyond the end of the export');
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
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES: {
      if (!session.export.writable) {
        return request.type === NBD_CMD_FLUSH ? simpleReply(handle, 0) : fail(NbdErrno.EPERM, 'export is read-only');
      }
      const target = session.export.source;
      const fua = (request.flags & NBD_CMD_FLAG_FUA) !== 0;
      if (request.type !== NBD_CMD_FLUSH && !inside) {
        // The protocol asks for ENOSPC when a write reaches past the end; an empty range is just invalid.
        return request.length === 0 ? fail(NbdErrno.EINVAL, 'range is empty') : fail(NbdErrno.ENOSPC, 'range is beyond the end of the export');
      }
      if (request.type === NBD_CMD_WRITE_ZEROES && (request.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0) {
        // Fast zero is not advertised; the protocol's answer for "cannot do it fast" is ENOTSUP.
        return fail(NbdErrno.ENOTSUP, 'fast zero is not supported');
      }
      try {
        if (request.type === NBD_CMD_FLUSH) await target.flush();
        else if (request.type === NBD_CMD_WRITE) await target.write(offset, payload ?? Buffer.alloc(0), fua);
        else if (request.type === NBD_CMD_WRITE_ZEROES) await writeZeroes(target, offset, request.length, fua);
        else if (target.trim !== undefined) await target.trim(offset, request.length, fua);
        else if (fua) await target.flush();
      } catch (err) {
        logSourceFailure(options, session, 'nbd target write failed', offset, request.length, err);
        const full = isLifeboatError(err, 'SIZE_MISMATCH');
        return full ? fail(NbdErrno.ENOSPC, 'no space') : fail(NbdErrno.EIO, 'write failed');
      }
      return simpleReply(handle, 0);
    }
    default:
      return fail(NbdErrno.EINVAL, 'command not supported');
  }
}

/**
 * NBD_CMD_WRITE_ZEROES: the range must read as zeros afterwards. NO_HOLE only
 * forbids punching holes, and writing zeros never punches one, so it needs no
 * separate path.
 */
async function writeZeroes(target: WritableBlockTarget, offset: number, length: number, fua: boolean): Promise<void> {
  if (target.writeZeroes !== undefined) return target.writeZeroes(offset, length, fua);
  const zeros = Buffer.alloc(Math.min(length, ZERO_SLICE_BYTES));
  for (let at = 0; at < length; at += zeros.length) {
    const n = Math.min(zeros.length, length - at);
    await target.write(offset + at, n === zeros.length ? zeros : zeros.subarray(0, n), false);
  }
  if (fua) await target.flush();
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
