/**
 * A QMP client (QEMU Machine Protocol) over a Unix socket: one JSON object per
 * line; the server greets, the client enters command mode with
 * qmp_capabilities, then commands and replies are matched by `id` and events
 * arrive at any time.
 *
 * Contracts:
 * - Every failure is LifeboatError('TRACKER_FAILED'): QEMU's error answer
 *   carries its `class` and `desc` in the message and in details (qmpClass,
 *   qmpDescription, command); a command without an answer within its timeout,
 *   a lost connection or a line that is not JSON end the connection and
 *   reject every pending command.
 * - A command that timed out may still have run in QEMU: callers make their
 *   sequences safe to repeat (the tracker tears down by name, then rebuilds).
 * - close() is idempotent and rejects pending commands.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { LifeboatError } from '../../core/errors.js';

export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  readonly timestamp: { readonly seconds: number; readonly microseconds: number };
}

export interface QmpClientOptions {
  readonly socketPath: string;
  /** Deadline for connecting and for each command's answer. Default 30 s. */
  readonly timeoutMs?: number;
}

interface PendingCommand {
  readonly command: string;
  readonly timer: NodeJS.Timeout;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
}

/** Longest line we buffer before calling the peer broken (query answers for many nodes are large). */
const MAX_LINE_BYTES = 64 * 1024 * 1024;

function trackerError(message: string, details: Record<string, unknown> = {}, cause?: unknown): LifeboatError {
  return new LifeboatError('TRACKER_FAILED', message, cause === undefined ? { details } : { details, cause });
}

export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, PendingCommand>();
  private readonly listeners = new Set<(event: QmpEvent) => void>();
  private readonly failureWatchers = new Set<(err: LifeboatError) => void>();
  private failure: LifeboatError | null = null;
  private greeting: ((version: unknown) => void) | null = null;
  /** QEMU's version as the greeting states it: { qemu: { major, minor, micro }, package }. */
  version: unknown = null;

  private constructor(
    private readonly socket: Socket,
    private readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.onData(text));
    socket.on('error', (err) => this.fail(trackerError(`QMP connection failed: ${err.message}`, { socketPath }, err)));
    socket.on('close', () => this.fail(trackerError('QEMU closed the QMP connection', { socketPath })));
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(options: QmpClientOptions): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ path: options.socketPath });
      const timer = setTimeout(() => {
        s.destroy();
        reject(trackerError(`cannot connect to QMP at ${options.socketPath} within ${timeoutMs} ms`, { socketPath: options.socketPath }));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(trackerError(`cannot connect to QMP at ${options.socketPath}: ${err.message}`, { socketPath: options.socketPath }, err));
      });
    });
    const client = new QmpClient(socket, options.socketPath, timeoutMs);
    try {
      client.version = await client.waitForGreeting();
      await client.execute('qmp_capabilities');
      return client;
    } catch (err) {
      await client.close();
      throw err;
    }
  }

  /**
   * Runs one command and resolves with its `return` value. QEMU's error answer
   * rejects with TRACKER_FAILED naming its class and description.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = `lifeboat-${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(trackerError(`QEMU did not answer ${command} within ${timeoutMs} ms`, { command, socketPath: this.socketPath }));
      }, timeoutMs);
      this.pending.set(id, { command, timer, resolve: resolve as (v: unknown) => void, reject });
      const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  /** True once the connection is gone (closed, failed or timed out). */
  get closed(): boolean {
    return this.failure !== null;
  }

  /** Calls `listener` for every event until the returned function is called. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Resolves with the first event named `name` (or one of the names) that
   * satisfies `match`, arriving after this call. Start waiting before the
   * command that causes the event.
   */
  waitForEvent(name: string | readonly string[], match: (data: Record<string, unknown>) => boolean = () => true, timeoutMs = this.timeoutMs): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      const stop = (): void => {
        clearTimeout(timer);
        unsubscribe();
        this.failureWatchers.delete(onFailure);
      };
      const timer = setTimeout(() => {
        stop();
        reject(trackerError(`QEMU sent no ${String(name)} event within ${timeoutMs} ms`, { event: name, socketPath: this.socketPath }));
      }, timeoutMs);
      const unsubscribe = this.onEvent((event) => {
        if ((typeof name === 'string' ? event.event === name : name.includes(event.event)) && match(event.data)) {
          stop();
          resolve(event);
        }
      });
      // A lost connection settles the wait at once instead of at the timeout.
      const onFailure = (err: LifeboatError): void => {
        stop();
        reject(err);
      };
      if (this.failure !== null) onFailure(this.failure);
      else this.failureWatchers.add(onFailure);
    });
  }

  /** Closes the connection; pending commands reject. Idempotent. */
  async close(): Promise<void> {
    if (this.socket.destroyed) {
      this.fail(trackerError('QMP client is closed', { socketPath: this.socketPath }));
      return;
    }
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.fail(trackerError('QMP client is closed', { socketPath: this.socketPath }));
    await closed;
  }

  private waitForGreeting(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(trackerError(`QEMU sent no QMP greeting within ${this.timeoutMs} ms`, { socketPath: this.socketPath }));
      }, this.timeoutMs);
      this.greeting = (version) => {
        clearTimeout(timer);
        resolve(version);
      };
      this.pending.set('greeting', { command: 'greeting', timer, resolve, reject });
    });
  }

  private onData(text: string): void {
    this.buffer += text;
    if (this.buffer.length > MAX_LINE_BYTES) {
      this.fail(trackerError('QMP line is too long', { socketPath: this.socketPath }));
      return;
    }
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line.length === 0) continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch (err) {
        this.fail(trackerError('QEMU sent a QMP line that is not JSON', { socketPath: this.socketPath, line: line.slice(0, 200) }, err));
        return;
      }
      this.dispatch(message);
    }
  }

  private dispatch(message: Record<string, unknown>): void {
    if ('QMP' in message) {
      const greeting = this.greeting;
      this.greeting = null;
      this.pending.delete('greeting');
      greeting?.((message.QMP as { version?: unknown }).version ?? null);
      return;
    }
    if (typeof message.event === 'string') {
      const event: QmpEvent = {
        event: message.event,
        data: (message.data as Record<string, unknown> | undefined) ?? {},
        timestamp: (message.timestamp as QmpEvent['timestamp'] | undefined) ?? { seconds: 0, microseconds: 0 },
      };
      for (const listener of [...this.listeners]) listener(event);
      return;
    }
    const id = typeof message.id === 'string' ? message.id : undefined;
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (id === undefined || pending === undefined) {
      // An answer we cannot match means the stream is no longer what we think it is.
      this.fail(trackerError('QEMU answered a QMP command that is not pending', { socketPath: this.socketPath, id }));
      return;
    }
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if ('error' in message) {
      const error = (message.error ?? {}) as { class?: string; desc?: string };
      pending.reject(
        trackerError(`QEMU refused ${pending.command}: ${error.class ?? 'Error'}: ${error.desc ?? 'no description'}`, {
          command: pending.command,
          qmpClass: error.class,
          qmpDescription: error.desc,
        }),
      );
    } else {
      pending.resolve(message.return);
    }
  }

  private fail(err: LifeboatError): void {
    if (this.failure !== null) return;
    this.failure = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.greeting = null;
    // Wakes event waiters so they reject with the failure instead of timing out.
    for (const watcher of [...this.failureWatchers]) watcher(err);
    this.socket.destroy();
  }
}

/** QEMU's error class of a TRACKER_FAILED raised by QmpClient.execute, if it came from QEMU. */
export function qmpErrorClass(err: unknown): string | undefined {
  if (err instanceof LifeboatError && err.code === 'TRACKER_FAILED') {
    const cls = err.details.qmpClass;
    return typeof cls === 'string' ? cls : undefined;
  }
  return undefined;
}
