import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { LifeboatError } from '../core/errors.js';
import type { WorkerRequest, WorkerResponse } from './chunk-worker.js';

type Pending = { resolve: (r: WorkerResponse) => void; reject: (e: Error) => void };
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * A fixed pool of chunk workers (one per core by default). Tasks queue FIFO and
 * go to the first idle worker. A worker that dies fails its task and the pool.
 */
export class WorkerPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { req: WorkerRequest; transfer: ArrayBuffer[] }[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly busy = new Map<Worker, number>();
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
      w.on('message', (res: WorkerResponse) => this.onMessage(w, res));
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`chunk worker exited with code ${code}`));
      });
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  run(req: DistributiveOmit<WorkerRequest, 'taskId'>, transfer: ArrayBuffer[] = []): Promise<WorkerResponse> {
    if (this.failed) return Promise.reject(this.failed);
    const taskId = this.nextTaskId++;
    return new Promise((resolve, reject) => {
      this.pending.set(taskId, { resolve, reject });
      this.queue.push({ req: { ...req, taskId } as WorkerRequest, transfer });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop() as Worker;
      const task = this.queue.shift() as { req: WorkerRequest; transfer: ArrayBuffer[] };
      this.busy.set(w, task.req.taskId);
      w.postMessage(task.req, task.transfer);
    }
  }

  private onMessage(w: Worker, res: WorkerResponse): void {
    this.busy.delete(w);
    this.idle.push(w);
    const p = this.pending.get(res.taskId);
    this.pending.delete(res.taskId);
    if (p) {
      if (res.type === 'error') p.reject(new LifeboatError('INTERNAL', `chunk worker failed: ${res.message}`));
      else p.resolve(res);
    }
    this.dispatch();
  }

  private fail(err: Error): void {
    this.failed ??= new LifeboatError('INTERNAL', `chunk worker failed: ${err.message}`, { cause: err });
    for (const p of this.pending.values()) p.reject(this.failed);
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.failed ??= new LifeboatError('INTERNAL', 'worker pool closed');
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
