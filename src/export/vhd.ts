import type { FileHandle } from 'node:fs/promises';
import type { BlockSource, Extent } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';
import { allocatedRuns } from './extent-walk.js';
import { Progress, copyRange, writeAt, type ProgressFn } from './image-io.js';
import { writeRaw } from './raw.js';
import {
  VHD_BITMAP_BYTES,
  VHD_BLOCK_BYTES,
  VHD_DYNAMIC_HEADER_BYTES,
  VHD_FOOTER_BYTES,
  VHD_MAX_BYTES,
  VHD_SECTOR_BYTES,
  encodeVhdDynamicHeader,
  encodeVhdFooter,
  vhdBatEntries,
} from './vhd-format.js';

/**
 * VHD writers, fixed and dynamic (docs/format/image-export.md). Both size the
 * virtual disk as the source size rounded up to `alignBytes`; the padding reads as
 * zeros.
 */
export interface VhdWriteOptions {
  /**
   * The virtual size is the source size rounded up to a multiple of this
   * (a multiple of 512). Azure accepts only fixed VHDs whose virtual size is a
   * whole number of MiB, so exportImage defaults to 1 MiB for 'vhd-fixed' and 512
   * for 'vhd'.
   */
  readonly alignBytes: number;
  /** Written as the footer timestamp. */
  readonly now: Date;
  /** 16 bytes written as the footer's unique id. */
  readonly uniqueId: Uint8Array;
  readonly onProgress?: ProgressFn;
}

/** The virtual size a VHD of `sourceBytes` gets; throws USAGE / SIZE_MISMATCH when impossible. */
export function vhdVirtualSize(sourceBytes: number, alignBytes: number): number {
  if (!Number.isSafeInteger(alignBytes) || alignBytes <= 0 || alignBytes % VHD_SECTOR_BYTES !== 0) {
    throw new LifeboatError('USAGE', 'VHD size alignment must be a positive multiple of 512 bytes', {
      details: { alignBytes },
    });
  }
  const size = Math.ceil(sourceBytes / alignBytes) * alignBytes;
  if (size > VHD_MAX_BYTES) {
    throw new LifeboatError('SIZE_MISMATCH', 'the disk is larger than a VHD can hold (2040 GiB); export qcow2 or raw', {
      details: { sizeBytes: size, maxBytes: VHD_MAX_BYTES },
    });
  }
  return size;
}

/**
 * Fixed VHD: the raw disk (zero extents left as holes), zero padding up to the
 * virtual size, then the footer. Writes into an empty regular file; no fsync.
 */
export async function writeVhdFixed(source: BlockSource, handle: FileHandle, options: VhdWriteOptions): Promise<void> {
  const size = vhdVirtualSize(source.sizeBytes, options.alignBytes);
  const footer = encodeVhdFooter({ diskType: 'fixed', sizeBytes: size, now: options.now, uniqueId: options.uniqueId });
  await writeRaw(source, handle, { target: 'file', onProgress: options.onProgress });
  await writeAt(handle, footer, size);
}

/** Where a dynamic VHD's structures go; see docs/format/image-export.md. */
interface DynamicLayout {
  readonly batOffset: number;
  readonly batBytes: number;
  /** File offset of the first block's sector bitmap. */
  readonly firstBitmap: number;
  /** Distance between consecutive blocks' bitmaps: data blocks start 4 KiB aligned. */
  readonly stride: number;
}

const BLOCK_SLOT_ALIGN = 4096;

function dynamicLayout(size: number): DynamicLayout {
  const batOffset = VHD_FOOTER_BYTES + VHD_DYNAMIC_HEADER_BYTES;
  const batBytes = Math.ceil((vhdBatEntries(size) * 4) / VHD_SECTOR_BYTES) * VHD_SECTOR_BYTES;
  const firstData = Math.ceil((batOffset + batBytes + VHD_BITMAP_BYTES) / BLOCK_SLOT_ALIGN) * BLOCK_SLOT_ALIGN;
  return { batOffset, batBytes, firstBitmap: firstData - VHD_BITMAP_BYTES, stride: BLOCK_SLOT_ALIGN + VHD_BLOCK_BYTES };
}

/**
 * Dynamic VHD: footer copy, dynamic header, BAT, then one slot per block holding
 * any non-zero extent (sector bitmap + 2 MiB data), then the footer. Blocks holding
 * only zeros stay unallocated (BAT entry 0xFFFFFFFF). Two passes over the extent
 * map (BAT, then data); memory is the BAT plus one copy chunk.
 */
export async function writeVhdDynamic(source: BlockSource, handle: FileHandle, options: VhdWriteOptions): Promise<void> {
  const size = vhdVirtualSize(source.sizeBytes, options.alignBytes);
  const layout = dynamicLayout(size);
  const footer = encodeVhdFooter({ diskType: 'dynamic', sizeBytes: size, now: options.now, uniqueId: options.uniqueId });

  const bat = Buffer.alloc(layout.batBytes, 0xff); // every entry VHD_BAT_UNUSED until allocated
  let blocks = 0;
  for await (const run of allocatedRuns(source, VHD_BLOCK_BYTES)) {
    for (let b = run.firstUnit; b < run.firstUnit + run.unitCount; b++) {
      bat.writeUInt32BE((layout.firstBitmap + blocks * layout.stride) / VHD_SECTOR_BYTES, b * 4);
      blocks++;
    }
  }

  await writeAt(handle, footer, 0);
  await writeAt(handle, encodeVhdDynamicHeader(size, layout.batOffset), VHD_FOOTER_BYTES);
  await writeAt(handle, bat, layout.batOffset);

  const progress = new Progress(source.sizeBytes, options.onProgress);
  let written = 0;
  for await (const run of allocatedRuns(source, VHD_BLOCK_BYTES)) {
    let next = 0; // first extent of run.data that may still overlap the current block
    for (let b = run.firstUnit; b < run.firstUnit + run.unitCount; b++) {
      const bitmapAt = layout.firstBitmap + written * layout.stride;
      if (written >= blocks || bat.readUInt32BE(b * 4) !== bitmapAt / VHD_SECTOR_BYTES) {
        throw new LifeboatError('SOURCE_UNREADABLE', 'the source extent map changed between the two VHD passes', {
          details: { block: b },
        });
      }
      const blockStart = b * VHD_BLOCK_BYTES;
      const parts = clip(run.data, next, blockStart, blockStart + VHD_BLOCK_BYTES);
      next = parts.resume;
      await writeAt(handle, sectorBitmap(parts.extents, blockStart), bitmapAt);
      const shift = bitmapAt + VHD_BITMAP_BYTES - blockStart;
      for (const e of parts.extents) await copyRange(source, handle, e.offset, e.length, e.offset + shift, progress);
      written++;
    }
    progress.advanceTo((run.firstUnit + run.unitCount) * VHD_BLOCK_BYTES);
  }
  if (written !== blocks) {
    throw new LifeboatError('SOURCE_UNREADABLE', 'the source extent map changed between the two VHD passes', {
      details: { blocksPlanned: blocks, blocksWritten: written },
    });
  }
  const end = blocks === 0 ? layout.batOffset + layout.batBytes : layout.firstBitmap + (blocks - 1) * layout.stride + VHD_BITMAP_BYTES + VHD_BLOCK_BYTES;
  await writeAt(handle, footer, end);
  progress.finish();
}

/** The parts of sorted `extents` (from index `from`) inside [start, end), and where the next block resumes. */
function clip(extents: readonly Extent[], from: number, start: number, end: number): { extents: Extent[]; resume: number } {
  const out: Extent[] = [];
  let i = from;
  for (; i < extents.length; i++) {
    const e = extents[i];
    if (e === undefined || e.offset >= end) break;
    const s = Math.max(e.offset, start);
    const t = Math.min(e.offset + e.length, end);
    if (t > s) out.push({ offset: s, length: t - s, zero: false });
    if (e.offset + e.length > end) break; // continues into the next block
  }
  return { extents: out, resume: i };
}

/** Bit set (most significant bit first) for every sector of the block that holds written data. */
function sectorBitmap(extents: readonly Extent[], blockStart: number): Buffer {
  const bitmap = Buffer.alloc(VHD_BITMAP_BYTES);
  for (const e of extents) {
    const first = Math.floor((e.offset - blockStart) / VHD_SECTOR_BYTES);
    const last = Math.ceil((e.offset + e.length - blockStart) / VHD_SECTOR_BYTES);
    for (let s = first; s < last; s++) bitmap[s >> 3] = (bitmap[s >> 3] ?? 0) | (0x80 >> (s & 7));
  }
  return bitmap;
}
