import { Worker } from 'node:worker_threads';
import { ERROR_CODES, LifeboatError, type ErrorCode } from '../core/errors.js';
import type { SealRequest, SealResponse } from './seal-protocol.js';

interface Task {
  readonly req: SealRequest;
  readonly resolve: (sealed: Buffer) => void;
  readonly reject: (err: Error) => void;
}

/**
 * A fixed pool of seal workers (seal-worker.ts), loaded the way the store's
 * WorkerPool loads its chunk workers: from dist as JavaScript, from sources
 * (tests, bench) through the tsx loader. Each worker runs one task at a time;
 * a worker that dies is replaced and its task fails (the uploader retries).
 */
export class SealPool {
  private readonly workers: (Worker | undefined)[] = [];
  private readonly idle = new Set<number>();
  private readonly queue: Task[] = [];
  private readonly running = new Map<number, Task>();
  private nextTaskId = 1;
  private closed = false;

  constructor(size: number) {
    for (let i = 0; i < Math.max(1, size); i++) this.spawn(i);
  }

  private spawn(i: number): void {
    const here = new URL(import.meta.url);
    const fromSource = here.pathname.endsWith('.ts');
    const file = new URL(fromSource ? './seal-worker.ts' : './seal-worker.js', here);
    // From TypeScript sources the worker must first register the tsx loader itself.
    const entry = fromSource ? `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(file.href)}); })` : file;
    const w = new Worker(entry, { eval: fromSource });
    w.on('message', (res: SealResponse) => this.onMessage(i, res));
    w.on('error', (err) => this.lost(i, w, err));
    w.on('exit', (code) => this.lost(i, w, new Error(`seal worker exited with code ${code}`)));
    w.unref();
    this.workers[i] = w;
    this.idle.add(i);
    this.dispatch();
  }

  private lost(i: number, w: Worker, err: Error): void {
    if (this.workers[i] !== w) return;
    this.workers[i] = undefined;
    this.idle.delete(i);
    const task = this.running.get(i);
    this.running.delete(i);
    task?.reject(new LifeboatError('INTERNAL', `seal worker failed: ${err.message}`, { cause: err, retryable: true }));
    if (!this.closed) this.spawn(i);
  }

  /** Seals the spooled segment `req.path` names; resolves with the sealed object. */
  seal(req: Omit<SealRequest, 'taskId'>): Promise<Buffer> {
    if (this.closed) return Promise.reject(new LifeboatError('INTERNAL', 'seal pool closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ req: { ...req, taskId: this.nextTaskId++ }, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    for (const i of [...this.idle]) {
      const task = this.queue.shift();
      if (!task) return;
      const w = this.workers[i] as Worker;
      this.idle.delete(i);
      this.running.set(i, task);
      w.ref();
      w.postMessage(task.req);
    }
  }

  private onMessage(i: number, res: SealResponse): void {
    const task = this.running.get(i);
    this.running.delete(i);
    this.idle.add(i);
    this.workers[i]?.unref();
    if (task) {
      if (res.type === 'error') {
        const code = res.code !== undefined && res.code in ERROR_CODES ? (res.code as ErrorCode) : 'INTERNAL';
        task.reject(new LifeboatError(code, code === 'INTERNAL' ? `seal worker failed: ${res.message}` : res.message));
      } else task.resolve(Buffer.from(res.sealed));
    }
    this.dispatch();
  }

  /** Stops the workers without waiting for their exit (they are unref'd; see the store's WorkerPool). */
  async close(): Promise<void> {
    this.closed = true;
    const err = new LifeboatError('INTERNAL', 'seal pool closed');
    for (const t of [...this.running.values(), ...this.queue]) t.reject(err);
    this.running.clear();
    this.queue.length = 0;
    for (const w of this.workers) void w?.terminate();
  }
}
