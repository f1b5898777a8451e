import { LifeboatError } from '../core/errors.js';

/**
 * Pure VHD structures (Microsoft Virtual Hard Disk Image Format Specification
 * 1.0): the 512-byte footer, the 1024-byte dynamic disk header, CHS geometry and
 * checksums. All fields big-endian. No I/O.
 */

export const VHD_SECTOR_BYTES = 512;
export const VHD_FOOTER_BYTES = 512;
export const VHD_DYNAMIC_HEADER_BYTES = 1024;
/** Dynamic disk block size: 2 MiB, the default of every tool (Hyper-V, qemu, Azure). */
export const VHD_BLOCK_BYTES = 2 * 1024 * 1024;
/** One bit per sector of a block, padded to a sector: 4096 bits = 512 bytes. */
export const VHD_BITMAP_BYTES = Math.ceil(VHD_BLOCK_BYTES / VHD_SECTOR_BYTES / 8 / VHD_SECTOR_BYTES) * VHD_SECTOR_BYTES;
/** Largest disk this writer produces: 2040 GiB, the limit Hyper-V and Azure apply to VHD. */
export const VHD_MAX_BYTES = 2040 * 1024 * 1024 * 1024;
/** Creator application field: four ASCII bytes naming Lifeboat. */
export const VHD_CREATOR_APP = 'lbt ';
/** Creator version 0.1 (major.minor, 16 bits each). */
export const VHD_CREATOR_VERSION = 0x0000_0001;
/** Creator host OS: "Wi2k" is what qemu and most non-Microsoft writers put here. */
export const VHD_CREATOR_HOST_OS = 'Wi2k';
/** VHD timestamps count seconds from 2000-01-01T00:00:00Z. */
export const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);
export const VHD_NO_OFFSET = 0xffff_ffff_ffff_ffffn;
export const VHD_BAT_UNUSED = 0xffff_ffff;

export type VhdDiskType = 'fixed' | 'dynamic';
const DISK_TYPE_CODE: Record<VhdDiskType, number> = { fixed: 2, dynamic: 3 };

export interface ChsGeometry {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
}

/**
 * CHS geometry by the specification's algorithm (appendix "CHS calculation").
 * cylinders*heads*sectorsPerTrack sectors may be less than the disk: readers that
 * size the disk by geometry (Virtual PC, qemu for unknown creators) see that less.
 */
export function vhdGeometry(sizeBytes: number): ChsGeometry {
  let totalSectors = Math.floor(sizeBytes / VHD_SECTOR_BYTES);
  totalSectors = Math.min(totalSectors, 65535 * 16 * 255);
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.max(4, Math.floor((cylinderTimesHeads + 1023) / 1024));
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

/** Bytes the CHS geometry addresses. */
export function chsBytes(g: ChsGeometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack * VHD_SECTOR_BYTES;
}

/** One's complement of the byte sum, the checksum of both the footer and the dynamic header. */
export function vhdChecksum(structure: Uint8Array): number {
  let sum = 0;
  for (const b of structure) sum = (sum + b) >>> 0;
  return ~sum >>> 0;
}

/** Seconds since the VHD epoch, as an unsigned 32-bit value. */
export function vhdTimestamp(now: Date): number {
  const seconds = Math.floor((now.getTime() - VHD_EPOCH_MS) / 1000);
  if (seconds < 0 || seconds > 0xffff_ffff) {
    throw new LifeboatError('USAGE', 'clock is outside the range a VHD timestamp can hold (2000-2136)', {
      details: { now: now.toISOString() },
    });
  }
  return seconds;
}

export interface VhdFooterFields {
  readonly diskType: VhdDiskType;
  /** Virtual size: a multiple of 512 bytes, written as both original and current size. */
  readonly sizeBytes: number;
  readonly now: Date;
  /** 16 bytes; written as given. */
  readonly uniqueId: Uint8Array;
}

/** The hard disk footer (also the copy at the start of a dynamic disk). */
export function encodeVhdFooter(f: VhdFooterFields): Buffer {
  if (f.sizeBytes % VHD_SECTOR_BYTES !== 0) {
    throw new LifeboatError('INTERNAL', 'VHD size must be a whole number of sectors', { details: { sizeBytes: f.sizeBytes } });
  }
  if (f.uniqueId.length !== 16) throw new LifeboatError('INTERNAL', 'VHD unique id must be 16 bytes');
  const b = Buffer.alloc(VHD_FOOTER_BYTES);
  const g = vhdGeometry(f.sizeBytes);
  b.write('conectix', 0, 'latin1');
  b.writeUInt32BE(0x0000_0002, 8); // features: reserved bit, always set
  b.writeUInt32BE(0x0001_0000, 12); // file format version 1.0
  b.writeBigUInt64BE(f.diskType === 'fixed' ? VHD_NO_OFFSET : BigInt(VHD_FOOTER_BYTES), 16); // data offset
  b.writeUInt32BE(vhdTimestamp(f.now), 24);
  b.write(VHD_CREATOR_APP, 28, 'latin1');
  b.writeUInt32BE(VHD_CREATOR_VERSION, 32);
  b.write(VHD_CREATOR_HOST_OS, 36, 'latin1');
  b.writeBigUInt64BE(BigInt(f.sizeBytes), 40); // original size
  b.writeBigUInt64BE(BigInt(f.sizeBytes), 48); // current size
  b.writeUInt16BE(g.cylinders, 56);
  b.writeUInt8(g.heads, 58);
  b.writeUInt8(g.sectorsPerTrack, 59);
  b.writeUInt32BE(DISK_TYPE_CODE[f.diskType], 60);
  Buffer.from(f.uniqueId).copy(b, 68);
  b.writeUInt8(0, 84); // saved state
  b.writeUInt32BE(vhdChecksum(b), 64);
  return b;
}

/** Entries in the block allocation table: one per 2 MiB block of the virtual size. */
export function vhdBatEntries(sizeBytes: number): number {
  return Math.ceil(sizeBytes / VHD_BLOCK_BYTES);
}

/** The dynamic disk header: no parent, BAT at `batOffset`. */
export function encodeVhdDynamicHeader(sizeBytes: number, batOffset: number): Buffer {
  const b = Buffer.alloc(VHD_DYNAMIC_HEADER_BYTES);
  b.write('cxsparse', 0, 'latin1');
  b.writeBigUInt64BE(VHD_NO_OFFSET, 8); // data offset: unused
  b.writeBigUInt64BE(BigInt(batOffset), 16);
  b.writeUInt32BE(0x0001_0000, 24); // header version 1.0
  b.writeUInt32BE(vhdBatEntries(sizeBytes), 28);
  b.writeUInt32BE(VHD_BLOCK_BYTES, 32);
  // Parent id, timestamp, name and locators stay zero: this is not a differencing disk.
  b.writeUInt32BE(vhdChecksum(b), 36);
  return b;
}
