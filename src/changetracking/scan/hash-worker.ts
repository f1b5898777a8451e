/**
 * Worker thread of the full compare: reads a piece of the disk through the
 * shared file descriptor and hashes its chunks, so reading and hashing run on
 * every core. The data and digests travel back by transfer, never by copy.
 */
import { readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { CHUNK_BYTES, DIGEST_BYTES, chunkDigestInto } from '../digest-map.js';
import type { HashRequest, HashResponse } from './hash-pool.js';

function handle(req: HashRequest): HashResponse {
  try {
    const ab = new ArrayBuffer(req.length);
    const data = Buffer.from(ab);
    for (let done = 0; done < req.length; ) {
      const n = readSync(req.fd, data, done, req.length - done, req.offset + done);
      if (n === 0) return { id: req.id, error: `ended at ${req.offset + done}, expected ${req.offset + req.length} bytes (did it shrink?)` };
      done += n;
    }
    const n = Math.ceil(req.length / CHUNK_BYTES);
    const dab = new ArrayBuffer(n * DIGEST_BYTES);
    const digests = Buffer.from(dab);
    for (let k = 0; k < n; k++) chunkDigestInto(data.subarray(k * CHUNK_BYTES, Math.min(req.length, (k + 1) * CHUNK_BYTES)), digests, k * DIGEST_BYTES);
    return { id: req.id, data: ab, digests: dab };
  } catch (err) {
    return { id: req.id, error: `read at ${req.offset} failed: ${(err as Error).message}` };
  }
}

parentPort?.on('message', (req: HashRequest) => {
  const res = handle(req);
  parentPort?.postMessage(res, 'data' in res ? [res.data, res.digests] : []);
});
