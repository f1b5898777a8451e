import type { FileHandle } from 'node:fs/promises';
import type { BlockSource } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';
import { allocatedRuns, type AllocatedRun } from './extent-walk.js';
import { Progress, copyRange, truncateTo, writeAt, type ProgressFn } from './image-io.js';
import {
  QCOW2_CLUSTER_BYTES,
  QCOW2_L2_ENTRIES,
  QCOW2_REFCOUNTS_PER_BLOCK,
  encodeQcow2Header,
  planQcow2,
  qcow2L1Entries,
  qcow2Pointer,
  qcow2VirtualSize,
  type Qcow2Layout,
} from './qcow2-layout.js';

/**
 * qcow2 writer: version 3, 64 KiB clusters, 16-bit refcounts, no compression, no
 * backing file. Clusters that hold only zero extents stay unallocated (L2 entry 0),
 * which reads as zeros. Memory: the L1 table, one L2 table, one refcount block and
 * one copy chunk, never the disk.
 *
 * Pass 1 walks the extent map to count data clusters per L2 table; the metadata is
 * then placed and written; pass 2 walks the map again, writing each L2 table and
 * the data clusters it maps in guest order.
 */
export interface Qcow2WriteOptions {
  readonly onProgress?: ProgressFn;
}

/**
 * Writes `source` as a qcow2 image into the empty regular file behind `handle`.
 * Does not fsync or close it. Throws SOURCE_UNREADABLE when the extent map changes
 * between the two passes.
 */
export async function writeQcow2(source: BlockSource, handle: FileHandle, options: Qcow2WriteOptions = {}): Promise<void> {
  const virtualSize = qcow2VirtualSize(source.sizeBytes);
  const perL2 = new Uint32Array(qcow2L1Entries(virtualSize));
  let dataClusters = 0;
  for await (const run of allocatedRuns(source, QCOW2_CLUSTER_BYTES)) {
    forEachL2Slice(run, (l1Index, count) => {
      perL2[l1Index] = (perL2[l1Index] ?? 0) + count;
      dataClusters += count;
    });
  }
  const l2Tables = perL2.reduce((n, c) => (c > 0 ? n + 1 : n), 0);
  const layout = planQcow2(virtualSize, dataClusters, l2Tables);

  await writeAt(handle, encodeQcow2Header(layout), 0);
  await writeRefcounts(handle, layout);
  await writeAt(handle, encodeL1(layout, perL2), layout.l1Offset);
  await writeMappedData(source, handle, layout, perL2, new Progress(source.sizeBytes, options.onProgress));
  await truncateTo(handle, layout.totalClusters * QCOW2_CLUSTER_BYTES);
}

/** Calls `fn` for each part of the run that falls inside one L2 table's range. */
function forEachL2Slice(run: AllocatedRun, fn: (l1Index: number, count: number, firstCluster: number) => void): void {
  const end = run.firstUnit + run.unitCount;
  for (let c = run.firstUnit; c < end; ) {
    const l1Index = Math.floor(c / QCOW2_L2_ENTRIES);
    const sliceEnd = Math.min(end, (l1Index + 1) * QCOW2_L2_ENTRIES);
    fn(l1Index, sliceEnd - c, c);
    c = sliceEnd;
  }
}

/** Every cluster of the file is in use exactly once: refcounts [0, totalClusters) are 1. */
async function writeRefcounts(handle: FileHandle, layout: Qcow2Layout): Promise<void> {
  const table = Buffer.alloc(layout.refcountTableClusters * QCOW2_CLUSTER_BYTES);
  for (let b = 0; b < layout.refcountBlocks; b++) {
    const blockOffset = layout.refcountBlocksOffset + b * QCOW2_CLUSTER_BYTES;
    table.writeBigUInt64BE(BigInt(blockOffset), b * 8);
    const block = Buffer.alloc(QCOW2_CLUSTER_BYTES);
    const used = Math.min(QCOW2_REFCOUNTS_PER_BLOCK, layout.totalClusters - b * QCOW2_REFCOUNTS_PER_BLOCK);
    for (let i = 0; i < used; i++) block.writeUInt16BE(1, i * 2);
    await writeAt(handle, block, blockOffset);
  }
  await writeAt(handle, table, layout.refcountTableOffset);
}

function encodeL1(layout: Qcow2Layout, perL2: Uint32Array): Buffer {
  const l1 = Buffer.alloc(layout.l1Clusters * QCOW2_CLUSTER_BYTES);
  let table = 0;
  perL2.forEach((count, l1Index) => {
    if (count === 0) return;
    l1.writeBigUInt64BE(qcow2Pointer(layout.l2Offset + table * QCOW2_CLUSTER_BYTES), l1Index * 8);
    table++;
  });
  return l1;
}

/** Pass 2: fills and writes one L2 table at a time and copies the data clusters it maps. */
async function writeMappedData(
  source: BlockSource,
  handle: FileHandle,
  layout: Qcow2Layout,
  perL2: Uint32Array,
  progress: Progress,
): Promise<void> {
  let nextData = 0;
  let nextTable = 0;
  let open: { l1Index: number; entries: Buffer; mapped: number } | undefined;
  const flush = async (): Promise<void> => {
    if (open === undefined) return;
    if (open.mapped !== perL2[open.l1Index]) throw changedDuringExport(open.l1Index);
    await writeAt(handle, open.entries, layout.l2Offset + nextTable * QCOW2_CLUSTER_BYTES);
    nextTable++;
    open = undefined;
  };

  for await (const run of allocatedRuns(source, QCOW2_CLUSTER_BYTES)) {
    const runHost = layout.dataOffset + nextData * QCOW2_CLUSTER_BYTES;
    const slices: { l1Index: number; count: number; firstCluster: number }[] = [];
    forEachL2Slice(run, (l1Index, count, firstCluster) => slices.push({ l1Index, count, firstCluster }));
    for (const s of slices) {
      if (open !== undefined && open.l1Index !== s.l1Index) await flush();
      open ??= { l1Index: s.l1Index, entries: Buffer.alloc(QCOW2_CLUSTER_BYTES), mapped: 0 };
      if (nextData + s.count > layout.dataClusters) throw changedDuringExport(s.l1Index);
      for (let i = 0; i < s.count; i++) {
        const host = layout.dataOffset + (nextData + i) * QCOW2_CLUSTER_BYTES;
        open.entries.writeBigUInt64BE(qcow2Pointer(host), ((s.firstCluster + i) % QCOW2_L2_ENTRIES) * 8);
      }
      open.mapped += s.count;
      nextData += s.count;
    }
    // The run's clusters are contiguous in the file, so guest and host offsets differ by one constant.
    const shift = runHost - run.firstUnit * QCOW2_CLUSTER_BYTES;
    for (const e of run.data) await copyRange(source, handle, e.offset, e.length, e.offset + shift, progress);
    progress.advanceTo((run.firstUnit + run.unitCount) * QCOW2_CLUSTER_BYTES);
  }
  await flush();
  if (nextData !== layout.dataClusters || nextTable !== layout.l2Tables) throw changedDuringExport(-1);
  progress.finish();
}

function changedDuringExport(l1Index: number): LifeboatError {
  return new LifeboatError('SOURCE_UNREADABLE', 'the source extent map changed between the two qcow2 passes', {
    details: { l1Index },
  });
}
