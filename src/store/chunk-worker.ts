/**
 * Worker thread for the CPU-heavy work of backup, journal processing and
 * reading: hashing chunks into keyed ids (with zero detection), sealing frames
 * (compress, then encrypt) and opening them. Buffers travel by transfer, never
 * by copy. A hashed batch stays in the worker until its seal request says which
 * of its chunks are new, so chunk data crosses threads only once, compressed.
 */
import { readSync, writevSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { ChunkHasher, CHUNK_ID_BYTES, open, seal } from '../format/crypto.js';
import { join, type WorkerRequest, type WorkerResponse } from './chunk-worker-protocol.js';

const hasher = new ChunkHasher(Buffer.from(workerData.idKey as Uint8Array));
const batches = new Map<number, Buffer>();
let zero = Buffer.alloc(0);

function transferable(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer;
  const copy = new ArrayBuffer(b.length);
  new Uint8Array(copy).set(b);
  return copy;
}

function handle(req: WorkerRequest): void {
  if (req.type === 'hash') {
    let data: Buffer;
    if (req.buffer) data = Buffer.from(req.buffer, 0, req.length);
    else {
      data = Buffer.allocUnsafe(req.length);
      for (let done = 0; done < req.length; ) {
        const n = readSync(req.fd as number, data, done, req.length - done, (req.position as number) + done);
        if (n === 0) throw Object.assign(new Error(`source ended at ${(req.position as number) + done} (did it shrink?)`), { code: 'SOURCE_UNREADABLE' });
        done += n;
      }
    }
    const n = Math.ceil(req.length / req.chunkSizeBytes);
    const ids = Buffer.alloc(n * CHUNK_ID_BYTES);
    if (zero.length !== req.chunkSizeBytes) zero = Buffer.alloc(req.chunkSizeBytes);
    for (let i = 0; i < n; i++) {
      const chunk = data.subarray(i * req.chunkSizeBytes, Math.min((i + 1) * req.chunkSizeBytes, req.length));
      if (chunk.equals(zero.subarray(0, chunk.length))) continue; // zero chunk: all-zero id
      hasher.id(chunk).copy(ids, i * CHUNK_ID_BYTES);
    }
    batches.set(req.batchId, data);
    const res: WorkerResponse = { type: 'hash', taskId: req.taskId, ids: transferable(ids) };
    parentPort?.postMessage(res, [res.ids]);
  } else if (req.type === 'seal') {
    const key = Buffer.from(req.key);
    const aadBuf = Buffer.from(req.aad);
    const plaintexts: Buffer[] = (req.frames ?? []).map((f) => Buffer.from(f));
    if (req.batchId !== undefined) {
      const batch = batches.get(req.batchId);
      batches.delete(req.batchId);
      const layout = req.layout ?? new Uint32Array(0);
      if (!batch && layout.length > 0) throw new Error(`batch ${req.batchId} is not held by this worker`);
      for (let i = 0; i < layout.length; ) {
        const count = layout[i++] as number;
        const parts: Buffer[] = [];
        for (let c = 0; c < count; c++, i += 2) parts.push((batch as Buffer).subarray(layout[i] as number, (layout[i] as number) + (layout[i + 1] as number)));
        plaintexts.push(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts));
      }
    }
    const envelopes = plaintexts.map((p) => seal(key, p, aadBuf));
    const res: WorkerResponse = { type: 'seal', taskId: req.taskId, ...join(envelopes) };
    parentPort?.postMessage(res, [res.joined]);
  } else {
    const key = Buffer.from(req.key);
    const aadBuf = Buffer.from(req.aad);
    const buf = Buffer.from(req.buffer);
    const plaintexts: Buffer[] = [];
    for (let i = 0; i < req.spans.length; i += 2) {
      const start = req.spans[i] as number;
      plaintexts.push(open(key, buf.subarray(start, start + (req.spans[i + 1] as number)), aadBuf, req.what));
    }
    if (req.type === 'open') {
      const res: WorkerResponse = { type: 'open', taskId: req.taskId, ...join(plaintexts) };
      parentPort?.postMessage(res, [res.joined]);
      return;
    }
    const res: WorkerResponse = { type: 'write', taskId: req.taskId, bytesWritten: writeChunks(req.fd, plaintexts, req.writes, req.ids, req.what) };
    parentPort?.postMessage(res);
  }
}

/**
 * Writes chunk ranges of decoded frames to `fd`. Ranges that follow each other
 * on disk go out in one writev call, whichever frames they come from: the cost
 * of restoring is mostly the number of write calls.
 */
function writeChunks(fd: number, frames: Buffer[], writes: Float64Array, ids: Uint8Array | undefined, what: string): number {
  let written = 0;
  let parts: Buffer[] = [];
  let runStart = 0;
  let runLength = 0;
  const flush = (): void => {
    if (runLength === 0) return;
    try {
      let done = 0;
      while (done < runLength) {
        let skip = done;
        const rest = parts.flatMap((p) => {
          if (skip >= p.length) {
            skip -= p.length;
            return [];
          }
          const view = skip > 0 ? p.subarray(skip) : p;
          skip = 0;
          return [view];
        });
        done += writevSync(fd, rest, runStart + done);
      }
    } catch (err) {
      throw Object.assign(new Error(`write at ${runStart} failed: ${(err as Error).message}`), { code: 'TARGET_UNWRITABLE' });
    }
    written += runLength;
    parts = [];
    runLength = 0;
  };
  for (let w = 0; w < writes.length / 4; w++) {
    const disk = writes[4 * w] as number;
    const plain = frames[writes[4 * w + 1] as number] as Buffer;
    const inner = writes[4 * w + 2] as number;
    const length = writes[4 * w + 3] as number;
    if (plain.length < inner + length) throw Object.assign(new Error(`${what}: frame is shorter than its chunks`), { code: 'CORRUPT_OBJECT' });
    const chunk = plain.subarray(inner, inner + length);
    if (ids && !hasher.id(chunk).equals(Buffer.from(ids.buffer, ids.byteOffset + 16 * w, 16))) {
      throw Object.assign(new Error(`${what}: a chunk does not hash to its id`), { code: 'CORRUPT_OBJECT' });
    }
    if (runLength > 0 && (runStart + runLength !== disk || parts.length >= 1024)) flush();
    if (runLength === 0) runStart = disk;
    const last = parts[parts.length - 1];
    // A chunk that continues the previous one in the same frame extends that view instead of adding one.
    if (last && last.buffer === chunk.buffer && last.byteOffset + last.length === chunk.byteOffset) {
      parts[parts.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + chunk.length);
    } else parts.push(chunk);
    runLength += length;
  }
  flush();
  return written;
}

parentPort?.on('message', (req: WorkerRequest) => {
  try {
    handle(req);
  } catch (err) {
    const e = err as Error & { code?: string };
    parentPort?.postMessage({ type: 'error', taskId: req.taskId, message: e.message, code: e.code } satisfies WorkerResponse);
  }
});
