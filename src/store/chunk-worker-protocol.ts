/**
 * The messages between the main thread and chunk workers (chunk-worker.ts),
 * and the helpers both sides use. Kept apart from the worker so the main
 * thread can import it without running worker code.
 */
export type WorkerRequest =
  /** Hashes a batch given as bytes (`buffer`) or read by the worker itself from an open file descriptor (`fd`, `position`). */
  | { type: 'hash'; taskId: number; batchId: number; buffer?: ArrayBuffer; fd?: number; position?: number; length: number; chunkSizeBytes: number }
  /**
   * Seals frames. Their plaintext is either given (`frames`) or gathered from a
   * kept batch: `layout` lists, per frame, a chunk count then (offset, length)
   * pairs into the batch. The batch is released afterwards.
   */
  | { type: 'seal'; taskId: number; key: Uint8Array; aad: Uint8Array; frames?: ArrayBuffer[]; batchId?: number; layout?: Uint32Array }
  /** Opens the frames at (offset, length) pairs of `buffer`. */
  | { type: 'open'; taskId: number; key: Uint8Array; aad: Uint8Array; buffer: ArrayBuffer; spans: Uint32Array; what: string }
  /**
   * Opens frames like 'open', then writes chunks of them to the file `fd`:
   * `writes` holds (disk offset, frame number, offset in the frame, length)
   * per chunk; `ids` (16 bytes per write), when given, are checked first.
   */
  | {
      type: 'write';
      taskId: number;
      key: Uint8Array;
      aad: Uint8Array;
      buffer: ArrayBuffer;
      spans: Uint32Array;
      what: string;
      fd: number;
      writes: Float64Array;
      ids?: Uint8Array;
    };

export type WorkerResponse =
  | { type: 'hash'; taskId: number; ids: ArrayBuffer }
  /** Results travel as one buffer holding every envelope or plaintext back to back, with their lengths: one transfer per task. */
  | { type: 'seal'; taskId: number; joined: ArrayBuffer; lengths: Uint32Array }
  | { type: 'open'; taskId: number; joined: ArrayBuffer; lengths: Uint32Array }
  | { type: 'write'; taskId: number; bytesWritten: number }
  | { type: 'error'; taskId: number; message: string; code?: string };

export function join(parts: Buffer[]): { joined: ArrayBuffer; lengths: Uint32Array } {
  const all = Buffer.allocUnsafeSlow(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) at += p.copy(all, at);
  return { joined: all.buffer as ArrayBuffer, lengths: Uint32Array.from(parts.map((p) => p.length)) };
}

/** Splits a joined reply back into views (no copies). */
export function split(joined: ArrayBuffer, lengths: Uint32Array): Buffer[] {
  const all = Buffer.from(joined);
  const out: Buffer[] = [];
  let at = 0;
  for (const len of lengths) {
    out.push(all.subarray(at, at + len));
    at += len;
  }
  return out;
}

