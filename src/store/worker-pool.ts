import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { ERROR_CODES, LifeboatError, type ErrorCode } from '../core/errors.js';
import type { WorkerRequest, WorkerResponse } from './chunk-worker-protocol.js';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type PoolRequest = DistributiveOmit<WorkerRequest, 'taskId'>;
export type PoolResponse = WorkerResponse & { worker: number };

interface Task {
  readonly req: WorkerRequest;
  readonly transfer: ArrayBuffer[];
  readonly resolve: (r: PoolResponse) => void;
  readonly reject: (e: Error) => void;
}

/**
 * A fixed pool of chunk workers (one per core by default). A task goes to the
 * worker it names (a seal of a batch that worker hashed) or else to the first
 * idle one; each worker runs one task at a time. A worker that dies fails the
 * pool. Errors a worker raises keep their LifeboatError code.
 */
export class WorkerPool {
  private readonly workers: Worker[] = [];
  private readonly idle = new Set<number>();
  private readonly shared: Task[] = [];
  private readonly own: Task[][] = [];
  private readonly running = new Map<number, Task>();
  private nextTaskId = 1;
  private failed: Error | undefined;

  constructor(idKey: Buffer, size = availableParallelism()) {
    const here = new URL(import.meta.url);
    const fromSource = here.pathname.endsWith('.ts');
    const file = new URL(fromSource ? './chunk-worker.ts' : './chunk-worker.js', here);
    // From TypeScript sources (tests, bench) the worker must first register the tsx loader itself.
    const entry = fromSource ? `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(file.href)}); })` : file;
    for (let i = 0; i < Math.max(1, size); i++) {
      const w = new Worker(entry, { eval: fromSource, workerData: { idKey: new Uint8Array(idKey) } });
      w.on('message', (res: WorkerResponse) => this.onMessage(i, res));
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`chunk worker exited with code ${code}`));
      });
      w.unref(); // an idle pool never keeps the process alive; a busy worker is ref'd while it runs
      this.workers.push(w);
      this.own.push([]);
      this.idle.add(i);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  run(req: PoolRequest, transfer: ArrayBuffer[] = [], worker?: number): Promise<PoolResponse> {
    if (this.failed) return Promise.reject(this.failed);
    const taskId = this.nextTaskId++;
    return new Promise((resolve, reject) => {
      const task: Task = { req: { ...req, taskId } as WorkerRequest, transfer, resolve, reject };
      if (worker === undefined) this.shared.push(task);
      else (this.own[worker] as Task[]).push(task);
      this.dispatch();
    });
  }

  private dispatch(): void {
    for (const i of [...this.idle]) {
      const task = (this.own[i] as Task[]).shift() ?? this.shared.shift();
      if (!task) continue;
      this.idle.delete(i);
      this.running.set(i, task);
      const w = this.workers[i] as Worker;
      w.ref();
      w.postMessage(task.req, task.transfer);
    }
  }

  private onMessage(i: number, res: WorkerResponse): void {
    const task = this.running.get(i);
    this.running.delete(i);
    this.idle.add(i);
    (this.workers[i] as Worker).unref();
    if (task) {
      if (res.type === 'error') {
        const code = res.code !== undefined && res.code in ERROR_CODES ? (res.code as ErrorCode) : 'INTERNAL';
        task.reject(new LifeboatError(code, code === 'INTERNAL' ? `chunk worker failed: ${res.message}` : res.message));
      } else task.resolve({ ...res, worker: i });
    }
    this.dispatch();
  }

  private fail(err: Error): void {
    this.failed ??= new LifeboatError('INTERNAL', `chunk worker failed: ${err.message}`, { cause: err });
    for (const t of [...this.running.values(), ...this.shared, ...this.own.flat()]) t.reject(this.failed);
    this.running.clear();
    this.shared.length = 0;
    for (const q of this.own) q.length = 0;
  }

  /**
   * Stops the workers. Does not wait for their exit: the workers are unref'd,
   * and waiting for the exit of an unref'd thread can outlive the event loop.
   */
  async close(): Promise<void> {
    this.failed ??= new LifeboatError('INTERNAL', 'worker pool closed');
    for (const w of this.workers) void w.terminate();
  }
}
