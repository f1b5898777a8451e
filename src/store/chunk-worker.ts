/**
 * Worker thread for the CPU-heavy half of backup and journal processing:
 * hashing chunks into keyed ids (with zero detection) and sealing frames
 * (compress, then encrypt). Buffers travel by transfer, never by copy.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ChunkHasher, CHUNK_ID_BYTES, seal } from '../format/crypto.js';

export type WorkerRequest =
  | { type: 'hash'; taskId: number; buffer: ArrayBuffer; length: number; chunkSizeBytes: number }
  | { type: 'seal'; taskId: number; key: Uint8Array; aad: Uint8Array; frames: ArrayBuffer[] };

export type WorkerResponse =
  | { type: 'hash'; taskId: number; ids: ArrayBuffer; buffer: ArrayBuffer }
  | { type: 'seal'; taskId: number; envelopes: ArrayBuffer[] }
  | { type: 'error'; taskId: number; message: string };

const hasher = new ChunkHasher(Buffer.from(workerData.idKey as Uint8Array));
let zero = Buffer.alloc(0);

function toArrayBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer;
  const copy = new ArrayBuffer(b.length);
  new Uint8Array(copy).set(b);
  return copy;
}

parentPort?.on('message', (req: WorkerRequest) => {
  try {
    if (req.type === 'hash') {
      const data = Buffer.from(req.buffer, 0, req.length);
      const n = Math.ceil(req.length / req.chunkSizeBytes);
      const ids = Buffer.alloc(n * CHUNK_ID_BYTES);
      if (zero.length !== req.chunkSizeBytes) zero = Buffer.alloc(req.chunkSizeBytes);
      for (let i = 0; i < n; i++) {
        const chunk = data.subarray(i * req.chunkSizeBytes, Math.min((i + 1) * req.chunkSizeBytes, req.length));
        if (chunk.equals(zero.subarray(0, chunk.length))) continue; // zero chunk: all-zero id
        hasher.id(chunk).copy(ids, i * CHUNK_ID_BYTES);
      }
      const res: WorkerResponse = { type: 'hash', taskId: req.taskId, ids: toArrayBuffer(ids), buffer: req.buffer };
      parentPort?.postMessage(res, [res.ids, res.buffer]);
    } else {
      const key = Buffer.from(req.key);
      const aadBuf = Buffer.from(req.aad);
      const envelopes = req.frames.map((f) => toArrayBuffer(seal(key, Buffer.from(f), aadBuf)));
      const res: WorkerResponse = { type: 'seal', taskId: req.taskId, envelopes };
      parentPort?.postMessage(res, envelopes);
    }
  } catch (err) {
    parentPort?.postMessage({ type: 'error', taskId: req.taskId, message: (err as Error).message } satisfies WorkerResponse);
  }
});
