import type { IncomingMessage } from 'node:http';
import { newTimeId } from '../../format/ids.js';

/** A caller-supplied request id is kept only when it is short and plain (it is echoed and logged). */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
export const REQUEST_ID_HEADER = 'x-request-id';

/** Fastify `genReqId`: the caller's `x-request-id` when well-formed, else a fresh time id. */
export function requestIdGenerator(now: () => Date): (req: IncomingMessage) => string {
  return (req) => {
    const given = req.headers[REQUEST_ID_HEADER];
    if (typeof given === 'string' && REQUEST_ID_PATTERN.test(given)) return given;
    return newTimeId(now());
  };
}
