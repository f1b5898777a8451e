import type { Socket } from 'node:net';
import { LifeboatError } from '../core/errors.js';

/**
 * The peer closed (or reset) the connection while we waited for bytes. Not a bug
 * in either side when it happens between messages; a protocol violation when it
 * cuts a message in half. Callers decide which by where they were.
 */
export class PeerClosedError extends LifeboatError {
  constructor(wantedBytes: number, bufferedBytes: number) {
    super('NBD_PROTOCOL', 'the NBD peer closed the connection', {
      details: { wantedBytes, bufferedBytes },
    });
  }
}

interface PendingRead {
  readonly bytes: number;
  readonly resolve: (data: Buffer) => void;
  readonly reject: (err: Error) => void;
}

/**
 * Exact-length reads from a socket, one at a time. The socket is paused while more
 * than `highWaterBytes` sit unread, so a client that floods us cannot grow memory
 * beyond that (plus one chunk). Contract: at most one read() or skip() is pending;
 * once the socket ends, reads that cannot be satisfied from the buffer reject with
 * PeerClosedError.
 */
export class SocketReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private pending: PendingRead | null = null;
  private ended = false;

  constructor(
    private readonly socket: Socket,
    private readonly highWaterBytes: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered > this.highWaterBytes) socket.pause();
      this.settle();
    });
    const onEnd = (): void => {
      this.ended = true;
      this.settle();
    };
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  }

  /** Resolves with exactly `bytes` bytes (a fresh or sliced Buffer). */
  read(bytes: number): Promise<Buffer> {
    if (this.pending !== null) {
      return Promise.reject(new LifeboatError('INTERNAL', 'SocketReader supports one pending read'));
    }
    return new Promise<Buffer>((resolve, reject) => {
      this.pending = { bytes, resolve, reject };
      this.settle();
    });
  }

  /**
   * Resolves with exactly `bytes` bytes, gathered a slice at a time: for payloads
   * larger than the high-water mark, which read() could never see buffered at once
   * (the socket is paused above it).
   */
  async readLarge(bytes: number): Promise<Buffer> {
    if (bytes <= this.highWaterBytes) return this.read(bytes);
    const out = Buffer.allocUnsafe(bytes);
    const sliceBytes = Math.max(1, Math.min(this.highWaterBytes, 1 << 20));
    for (let at = 0; at < bytes; ) {
      const n = Math.min(sliceBytes, bytes - at);
      (await this.read(n)).copy(out, at);
      at += n;
    }
    return out;
  }

  /** Discards exactly `bytes` bytes, a slice at a time, without holding them all. */
  async skip(bytes: number): Promise<void> {
    const sliceBytes = Math.max(1, Math.min(this.highWaterBytes, 1 << 20));
    let left = bytes;
    while (left > 0) {
      const n = Math.min(left, sliceBytes);
      await this.read(n);
      left -= n;
    }
  }

  private settle(): void {
    const pending = this.pending;
    if (pending === null) return;
    if (this.buffered >= pending.bytes) {
      this.pending = null;
      pending.resolve(this.take(pending.bytes));
    } else if (this.ended) {
      this.pending = null;
      pending.reject(new PeerClosedError(pending.bytes, this.buffered));
    }
    if (this.buffered <= this.highWaterBytes && this.socket.isPaused() && !this.ended) this.socket.resume();
  }

  private take(bytes: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= bytes) {
      this.buffered -= bytes;
      if (first.length === bytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    const out = Buffer.allocUnsafe(bytes);
    let filled = 0;
    while (filled < bytes) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new LifeboatError('INTERNAL', 'SocketReader buffer accounting is off');
      const n = Math.min(chunk.length, bytes - filled);
      chunk.copy(out, filled, 0, n);
      filled += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    this.buffered -= bytes;
    return out;
  }
}
