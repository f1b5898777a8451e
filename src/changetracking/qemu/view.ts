/**
 * What the qemu tracker asks of QEMU, one QMP sequence per step, following the
 * verified recipes (docs/replication.md; RECIPES section 1): dirty bitmaps on
 * the disk node, and a point-in-time view — a fleecing overlay filled by a
 * `blockdev-backup sync=none` job, started in the same `transaction` that
 * freezes one bitmap and starts the next — exported read-only over NBD with
 * the frozen bitmap.
 *
 * Everything QEMU holds for the view is named after the disk node, so a new
 * process can find and remove what a killed one left (closeView is idempotent
 * and works from names alone).
 */
import { createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockSource } from '../../core/block-source.js';
import { LifeboatError } from '../../core/errors.js';
import { writeQcow2 } from '../../export/qcow2.js';
import type { QmpClient } from './qmp.js';
import { qmpErrorClass } from './qmp.js';

/** Dirty-bitmap granularity: one bit per 4 KiB chunk, the digest map's chunk. */
export const BITMAP_GRANULARITY = 4096;

export interface BitmapInfo {
  readonly name: string;
  readonly recording: boolean;
  readonly persistent: boolean;
  readonly inconsistent: boolean;
  readonly busy: boolean;
  readonly count: number;
  readonly granularity: number;
}

export interface NodeInfo {
  readonly sizeBytes: number;
  /** The block driver of the node ('qcow2', 'raw', ...). */
  readonly driver: string;
  readonly bitmaps: readonly BitmapInfo[];
}

/** QEMU ids for the view of one disk node; node names are at most 31 characters. */
export interface ViewNames {
  readonly node: string;
  readonly fleeceNode: string;
  readonly jobId: string;
  readonly exportId: string;
  readonly exportName: string;
  readonly overlayPath: string;
}

export function viewNames(node: string, workDir: string): ViewNames {
  const h = createHash('sha256').update(node).digest('hex').slice(0, 10);
  return {
    node,
    fleeceNode: `lbfleece-${h}`,
    jobId: `lbjob-${h}`,
    exportId: `lbexport-${h}`,
    exportName: `lifeboat-${h}`,
    overlayPath: join(workDir, `lifeboat-fleece-${h}.qcow2`),
  };
}

interface RawNode {
  'node-name'?: string;
  drv?: string;
  image?: { 'virtual-size'?: number };
  'dirty-bitmaps'?: Array<Partial<BitmapInfo> & { name: string }>;
}

export class QemuView {
  constructor(
    private readonly qmp: QmpClient,
    readonly names: ViewNames,
    private readonly options: { readonly nbdSocket: string; readonly timeoutMs: number },
  ) {}

  /** Size, driver and dirty bitmaps of the disk node; TRACKER_FAILED when QEMU has no such node. */
  async nodeInfo(): Promise<NodeInfo> {
    const nodes = await this.qmp.execute<RawNode[]>('query-named-block-nodes', { flat: true });
    const node = nodes.find((n) => n['node-name'] === this.names.node);
    if (node === undefined) {
      throw new LifeboatError('TRACKER_FAILED', `QEMU has no block node named ${this.names.node}`, {
        retryable: false,
        details: { node: this.names.node, nodes: nodes.map((n) => n['node-name']) },
      });
    }
    return {
      sizeBytes: node.image?.['virtual-size'] ?? 0,
      driver: node.drv ?? 'unknown',
      bitmaps: (node['dirty-bitmaps'] ?? []).map((b) => ({
        name: b.name,
        recording: b.recording ?? false,
        persistent: b.persistent ?? false,
        inconsistent: b.inconsistent ?? false,
        busy: b.busy ?? false,
        count: b.count ?? 0,
        granularity: b.granularity ?? 0,
      })),
    };
  }

  async addBitmap(name: string, persistent: boolean): Promise<void> {
    await this.qmp.execute('block-dirty-bitmap-add', { node: this.names.node, name, granularity: BITMAP_GRANULARITY, persistent });
  }

  /** Removes a bitmap (also an inconsistent one, the only thing QEMU allows on those); a missing one is fine. */
  async removeBitmap(name: string): Promise<void> {
    try {
      await this.qmp.execute('block-dirty-bitmap-remove', { node: this.names.node, name });
    } catch (err) {
      if (qmpErrorClass(err) === 'GenericError' && /not found/i.test((err as Error).message)) return;
      throw err;
    }
  }

  /** Adds the dirty bits of `sources` to `target` (so aborted changes come again). */
  async merge(target: string, sources: readonly string[]): Promise<void> {
    if (sources.length === 0) return;
    await this.qmp.execute('block-dirty-bitmap-merge', { node: this.names.node, target, bitmaps: [...sources] });
  }

  /** Starts QEMU's NBD server on our socket, unless one runs already (then it must listen there). */
  async ensureNbdServer(): Promise<void> {
    try {
      await this.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: this.options.nbdSocket } } });
    } catch (err) {
      if (/already running/i.test((err as Error).message)) return;
      throw err;
    }
  }

  /**
   * Creates the point-in-time view: an empty qcow2 overlay backed by the disk
   * node, then ONE transaction that disables `frozen`, adds `next` and starts
   * the fleecing job (copy-before-write into the overlay), then a read-only
   * NBD export of the overlay carrying `frozen`. On failure, what was built is
   * torn down again and the bitmaps are as before (the transaction is atomic).
   */
  async openView(frozen: string, next: string, persistent: boolean, sizeBytes: number): Promise<void> {
    const { names } = this;
    try {
      await createEmptyQcow2(names.overlayPath, sizeBytes);
    } catch (err) {
      throw new LifeboatError('TRACKER_FAILED', `cannot create the fleecing overlay ${names.overlayPath}: ${(err as Error).message}`, {
        cause: err,
        details: { overlayPath: names.overlayPath },
      });
    }
    try {
      await this.qmp.execute('blockdev-add', {
        driver: 'qcow2',
        'node-name': names.fleeceNode,
        file: { driver: 'file', filename: names.overlayPath },
        backing: names.node,
      });
      await this.qmp.execute('transaction', {
        actions: [
          { type: 'block-dirty-bitmap-disable', data: { node: names.node, name: frozen } },
          { type: 'block-dirty-bitmap-add', data: { node: names.node, name: next, granularity: BITMAP_GRANULARITY, persistent } },
          { type: 'blockdev-backup', data: { 'job-id': names.jobId, device: names.node, target: names.fleeceNode, sync: 'none' } },
        ],
      });
    } catch (err) {
      await this.closeView().catch(() => undefined);
      throw err;
    }
  }

  /** Exports the view read-only with `frozen` (after openView succeeded). */
  async exportView(frozen: string): Promise<void> {
    await this.qmp.execute('block-export-add', {
      type: 'nbd',
      id: this.names.exportId,
      'node-name': this.names.fleeceNode,
      name: this.names.exportName,
      writable: false,
      bitmaps: [{ node: this.names.node, name: frozen }],
    });
  }

  /** Removes the export, the fleecing job, the overlay node and file, whichever exist. Idempotent. */
  async closeView(): Promise<void> {
    const { names } = this;
    const [exportsNow, jobs] = await Promise.all([
      this.qmp.execute<Array<{ id: string }>>('query-block-exports'),
      this.qmp.execute<Array<{ device: string }>>('query-block-jobs'),
    ]);
    if (exportsNow.some((e) => e.id === names.exportId)) {
      const deleted = this.qmp.waitForEvent('BLOCK_EXPORT_DELETED', (d) => d.id === names.exportId, this.options.timeoutMs);
      deleted.catch(() => undefined);
      await this.qmp.execute('block-export-del', { id: names.exportId, mode: 'hard' });
      await deleted;
    }
    if (jobs.some((j) => j.device === names.jobId)) {
      const ended = this.qmp.waitForEvent(['BLOCK_JOB_CANCELLED', 'BLOCK_JOB_COMPLETED'], (d) => d.device === names.jobId, this.options.timeoutMs);
      ended.catch(() => undefined);
      await this.qmp.execute('block-job-cancel', { device: names.jobId, force: true });
      await ended;
    }
    const nodes = await this.qmp.execute<RawNode[]>('query-named-block-nodes', { flat: true });
    if (nodes.some((n) => n['node-name'] === names.fleeceNode)) {
      await this.qmp.execute('blockdev-del', { 'node-name': names.fleeceNode });
    }
    await rm(names.overlayPath, { force: true });
  }
}

/**
 * Writes an empty qcow2 image of `sizeBytes` (header, refcounts, L1; no data
 * clusters). In-process, so a cut does not wait for a qemu-img process; the
 * backing is given at blockdev-add, not in the file.
 */
async function createEmptyQcow2(path: string, sizeBytes: number): Promise<void> {
  const zeros: BlockSource = {
    sizeBytes,
    read: async (_offset, length) => Buffer.alloc(length),
    extents: async (offset, length) => [{ offset, length, zero: true }],
    close: async () => undefined,
  };
  const handle = await open(path, 'w', 0o600);
  try {
    await writeQcow2(zeros, handle);
  } finally {
    await handle.close();
  }
}
