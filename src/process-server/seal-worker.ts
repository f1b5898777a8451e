/**
 * Worker thread of the uploader: reads one spooled SEGMENT frame, checks it
 * again (a spool file is input like any other), and seals it for the store
 * (sealSegment: encode, zstd, AES-GCM). The file is read here, not on the main
 * thread, so segment data crosses threads once, sealed.
 */
import { readFileSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { sealSegment } from '../store/journal.js';
import type { SealRequest, SealResponse } from './seal-protocol.js';
import { spooledSegment } from './spooled-segment.js';

function handle(req: SealRequest): SealResponse {
  const segment = spooledSegment(readFileSync(req.path), req);
  const sealed = sealSegment(req.storeId, Buffer.from(req.encKey), req.disk, segment);
  const copy = new ArrayBuffer(sealed.length);
  new Uint8Array(copy).set(sealed);
  return { type: 'sealed', taskId: req.taskId, sealed: copy };
}

parentPort?.on('message', (req: SealRequest) => {
  try {
    const res = handle(req);
    parentPort?.postMessage(res, res.type === 'sealed' ? [res.sealed] : []);
  } catch (err) {
    const e = err as Error & { code?: string };
    parentPort?.postMessage({ type: 'error', taskId: req.taskId, message: e.message, code: e.code } satisfies SealResponse);
  }
});
