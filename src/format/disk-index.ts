import { ByteReader, ByteWriter } from './binary.js';
import { CHUNK_ID_BYTES } from './crypto.js';

/**
 * The index of one recovery point: the chunk id of every chunk slot of the disk,
 * in order. An all-zero id marks a chunk that reads as zeros (unallocated or
 * zero-filled); it is never stored. Layout (then compressed and sealed):
 *
 *   "LBDI" | u16 version | u16 0 | u32 chunkSizeBytes | u64 diskSizeBytes | u32 chunkCount | chunkCount x 16-byte id
 */
const MAGIC = 'LBDI';
const VERSION = 1;

export const ZERO_ID = Buffer.alloc(CHUNK_ID_BYTES);

export interface DiskIndex {
  readonly chunkSizeBytes: number;
  readonly diskSizeBytes: number;
  /** chunkCount x 16 bytes. */
  readonly ids: Buffer;
}

export function chunkCountFor(diskSizeBytes: number, chunkSizeBytes: number): number {
  return Math.ceil(diskSizeBytes / chunkSizeBytes);
}

export function newDiskIndex(diskSizeBytes: number, chunkSizeBytes: number): DiskIndex {
  return { chunkSizeBytes, diskSizeBytes, ids: Buffer.alloc(chunkCountFor(diskSizeBytes, chunkSizeBytes) * CHUNK_ID_BYTES) };
}

export function chunkIdAt(index: DiskIndex, slot: number): Buffer {
  return index.ids.subarray(slot * CHUNK_ID_BYTES, (slot + 1) * CHUNK_ID_BYTES);
}

/** True for the all-zero id (a chunk that reads as zeros) at `offset` of `ids`. */
export function isZeroId(ids: Buffer, offset = 0): boolean {
  return ids.readBigUInt64LE(offset) === 0n && ids.readBigUInt64LE(offset + 8) === 0n;
}

export function encodeDiskIndex(index: DiskIndex): Buffer {
  const w = new ByteWriter(24 + index.ids.length);
  w.ascii(MAGIC).u16(VERSION).u16(0).u32(index.chunkSizeBytes).u64(index.diskSizeBytes);
  w.u32(index.ids.length / CHUNK_ID_BYTES).bytes(index.ids);
  return w.finish();
}

export function decodeDiskIndex(buf: Buffer, what: string): DiskIndex {
  const r = new ByteReader(buf, what);
  r.magic(MAGIC);
  r.version(VERSION);
  r.u16();
  const chunkSizeBytes = r.u32();
  const diskSizeBytes = r.u64();
  const count = r.u32();
  if (chunkSizeBytes === 0 || count !== chunkCountFor(diskSizeBytes, chunkSizeBytes)) {
    r.fail(`chunk count ${count} does not match disk size ${diskSizeBytes} at chunk size ${chunkSizeBytes}`);
  }
  const ids = Buffer.from(r.bytes(count * CHUNK_ID_BYTES));
  r.end();
  return { chunkSizeBytes, diskSizeBytes, ids };
}
