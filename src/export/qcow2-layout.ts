/**
 * Pure qcow2 (version 3) layout arithmetic and header encoding: where each table
 * goes, given the disk size and how many data clusters and L2 tables the image
 * needs. No I/O. Byte layout in docs/format/image-export.md; field meanings from
 * qemu docs/interop/qcow2.txt.
 */

export const QCOW2_CLUSTER_BITS = 16;
export const QCOW2_CLUSTER_BYTES = 1 << QCOW2_CLUSTER_BITS;
/** Guest clusters mapped by one L2 table (8-byte entries). */
export const QCOW2_L2_ENTRIES = QCOW2_CLUSTER_BYTES / 8;
/** refcount_order 4: 16-bit refcounts, the qemu default. */
export const QCOW2_REFCOUNT_ORDER = 4;
export const QCOW2_REFCOUNTS_PER_BLOCK = (QCOW2_CLUSTER_BYTES * 8) / (1 << QCOW2_REFCOUNT_ORDER);
/** Version 3 header without optional fields (header_length). */
export const QCOW2_HEADER_BYTES = 104;
/** L1/L2 flag: the cluster's refcount is exactly one (may be written in place). */
export const QCOW2_OFLAG_COPIED = 1n << 63n;

export interface Qcow2Layout {
  readonly sizeBytes: number;
  readonly l1Entries: number;
  /** Byte offsets in the image file; every table starts on a cluster boundary. */
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  readonly l1Offset: number;
  readonly l1Clusters: number;
  readonly refcountBlocksOffset: number;
  readonly refcountBlocks: number;
  readonly l2Offset: number;
  readonly l2Tables: number;
  readonly dataOffset: number;
  readonly dataClusters: number;
  /** Every cluster of the file, all with refcount 1; the file is this many clusters long. */
  readonly totalClusters: number;
}

/** Number of L1 entries (L2 tables the guest address space could need). */
export function qcow2L1Entries(sizeBytes: number): number {
  return Math.ceil(sizeBytes / (QCOW2_CLUSTER_BYTES * QCOW2_L2_ENTRIES));
}

/**
 * The guest size the header records: qemu drops a trailing partial sector, so the
 * size is rounded up to 512 bytes; the padding reads as zeros.
 */
export function qcow2VirtualSize(sourceBytes: number): number {
  return Math.ceil(sourceBytes / 512) * 512;
}

/**
 * Places the metadata: header cluster, refcount table, L1 table, refcount blocks,
 * L2 tables, then data clusters, each region contiguous. The refcount blocks must
 * cover every cluster including themselves, hence the fixed-point loop.
 */
export function planQcow2(sizeBytes: number, dataClusters: number, l2Tables: number): Qcow2Layout {
  const l1Entries = qcow2L1Entries(sizeBytes);
  // An empty disk has no L1 table at all (offset 0): a cluster for it would be a leak.
  const l1Clusters = clustersFor(l1Entries * 8);
  let refcountBlocks = 1;
  let refcountTableClusters = 1;
  let totalClusters = 0;
  for (;;) {
    totalClusters = 1 + refcountTableClusters + l1Clusters + refcountBlocks + l2Tables + dataClusters;
    const blocks = Math.ceil(totalClusters / QCOW2_REFCOUNTS_PER_BLOCK);
    const tableClusters = Math.max(1, clustersFor(blocks * 8));
    if (blocks === refcountBlocks && tableClusters === refcountTableClusters) break;
    refcountBlocks = blocks;
    refcountTableClusters = tableClusters;
  }
  const at = (clusters: number): number => clusters * QCOW2_CLUSTER_BYTES;
  const refcountTableOffset = at(1);
  const l1Offset = refcountTableOffset + at(refcountTableClusters);
  const refcountBlocksOffset = l1Offset + at(l1Clusters);
  const l2Offset = refcountBlocksOffset + at(refcountBlocks);
  const dataOffset = l2Offset + at(l2Tables);
  return {
    sizeBytes,
    l1Entries,
    refcountTableOffset,
    refcountTableClusters,
    l1Offset: l1Clusters === 0 ? 0 : l1Offset,
    l1Clusters,
    refcountBlocksOffset,
    refcountBlocks,
    l2Offset,
    l2Tables,
    dataOffset,
    dataClusters,
    totalClusters,
  };
}

function clustersFor(bytes: number): number {
  return Math.ceil(bytes / QCOW2_CLUSTER_BYTES);
}

/** The version 3 header: big-endian, no backing file, no encryption, no snapshots, no features. */
export function encodeQcow2Header(layout: Qcow2Layout): Buffer {
  const h = Buffer.alloc(QCOW2_HEADER_BYTES);
  h.write('QFI\xfb', 0, 'latin1');
  h.writeUInt32BE(3, 4); // version
  h.writeBigUInt64BE(0n, 8); // backing_file_offset
  h.writeUInt32BE(0, 16); // backing_file_size
  h.writeUInt32BE(QCOW2_CLUSTER_BITS, 20);
  h.writeBigUInt64BE(BigInt(layout.sizeBytes), 24);
  h.writeUInt32BE(0, 32); // crypt_method
  h.writeUInt32BE(layout.l1Entries, 36);
  h.writeBigUInt64BE(BigInt(layout.l1Offset), 40);
  h.writeBigUInt64BE(BigInt(layout.refcountTableOffset), 48);
  h.writeUInt32BE(layout.refcountTableClusters, 56);
  h.writeUInt32BE(0, 60); // nb_snapshots
  h.writeBigUInt64BE(0n, 64); // snapshots_offset
  h.writeBigUInt64BE(0n, 72); // incompatible_features
  h.writeBigUInt64BE(0n, 80); // compatible_features
  h.writeBigUInt64BE(0n, 88); // autoclear_features
  h.writeUInt32BE(QCOW2_REFCOUNT_ORDER, 96);
  h.writeUInt32BE(QCOW2_HEADER_BYTES, 100); // header_length
  return h;
}

/** An L1 or L2 entry pointing at a cluster with refcount 1. */
export function qcow2Pointer(hostOffset: number): bigint {
  return BigInt(hostOffset) | QCOW2_OFLAG_COPIED;
}
