import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { LifeboatError } from '../../core/errors.js';

export interface HashRequest {
  readonly id: number;
  readonly fd: number;
  readonly offset: number;
  readonly length: number;
}

export type HashResponse = { readonly id: number; readonly data: ArrayBuffer; readonly digests: ArrayBuffer } | { readonly id: number; readonly error: string };

interface Pending {
  readonly resolve: (r: { data: Buffer; digests: Buffer }) => void;
  readonly reject: (e: Error) => void;
}

/**
 * Worker threads that read and hash pieces of a disk for the full compare (one
 * per core, at most 8). Created on first use and shared by every compare of the
 * process; idle workers do not keep the process alive. A worker that dies fails
 * its tasks and is replaced on the next use.
 */
export class HashPool {
  private workers: Worker[] = [];
  private readonly busy = new Map<Worker, number>();
  private readonly owned = new Map<Worker, Set<number>>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(readonly size = Math.min(8, availableParallelism())) {}

  /** Reads [offset, offset+length) of `fd` and hashes its chunks (16 bytes of digest per 4 KiB). */
  run(fd: number, offset: number, length: number): Promise<{ data: Buffer; digests: Buffer }> {
    const worker = this.pick();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.busy.set(worker, (this.busy.get(worker) ?? 0) + 1);
      this.owned.get(worker)?.add(id);
      worker.ref();
      worker.postMessage({ id, fd, offset, length } satisfies HashRequest);
    });
  }

  async close(): Promise<void> {
    const workers = this.workers;
    this.workers = [];
    await Promise.all(workers.map((w) => w.terminate()));
  }

  private pick(): Worker {
    while (this.workers.length < this.size) this.workers.push(this.spawn());
    let best = this.workers[0] as Worker;
    for (const w of this.workers) if ((this.busy.get(w) ?? 0) < (this.busy.get(best) ?? 0)) best = w;
    return best;
  }

  private spawn(): Worker {
    const here = new URL(import.meta.url);
    const fromSource = here.pathname.endsWith('.ts');
    const file = new URL(fromSource ? './hash-worker.ts' : './hash-worker.js', here);
    // From TypeScript sources (tests) the worker registers the tsx loader itself.
    const entry = fromSource ? `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(file.href)}); })` : file;
    const w = new Worker(entry, { eval: fromSource });
    const owned = new Set<number>();
    this.owned.set(w, owned);
    w.on('message', (res: HashResponse) => {
      const p = this.pending.get(res.id);
      this.pending.delete(res.id);
      owned.delete(res.id);
      const left = (this.busy.get(w) ?? 1) - 1;
      this.busy.set(w, left);
      if (left === 0) w.unref();
      if (!p) return;
      if ('error' in res) p.reject(new LifeboatError('TRACKER_FAILED', res.error));
      else p.resolve({ data: Buffer.from(res.data), digests: Buffer.from(res.digests) });
    });
    const fail = (err: Error) => {
      this.workers = this.workers.filter((x) => x !== w);
      this.busy.delete(w);
      this.owned.delete(w);
      for (const [id, p] of this.pending) {
        if (!owned.has(id)) continue;
        this.pending.delete(id);
        p.reject(new LifeboatError('TRACKER_FAILED', `hash worker failed: ${err.message}`, { cause: err }));
      }
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`hash worker exited with code ${code}`)));
    w.unref();
    return w;
  }
}

let shared: HashPool | null = null;

/** The process's hash pool. */
export function hashPool(): HashPool {
  shared ??= new HashPool();
  return shared;
}
