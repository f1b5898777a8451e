import type { Socket } from 'node:net';

/**
 * Writes whole messages to the socket. Every message is handed over in one
 * synchronous burst (cork, write all parts, uncork), so concurrent request
 * handlers can never interleave their bytes. The returned promise settles once
 * the socket has room again (or is gone), which is what bounds the memory held by
 * replies queued behind a slow client. Writes after the socket is destroyed are
 * dropped: the connection is over and nobody will read them.
 */
export class ReplyWriter {
  private drained: Promise<void> | null = null;

  constructor(private readonly socket: Socket) {}

  send(parts: readonly Buffer[]): Promise<void> {
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) return Promise.resolve();
    socket.cork();
    for (const part of parts) socket.write(part);
    socket.uncork();
    return socket.writableNeedDrain ? this.waitForDrain() : Promise.resolve();
  }

  private waitForDrain(): Promise<void> {
    // One shared promise: many handlers may wait, but the socket gets only two listeners.
    this.drained ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        this.drained = null;
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
    return this.drained;
  }
}
