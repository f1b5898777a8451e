import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { CHUNK_BYTES, DigestMap, chunkDigestInto, DIGEST_BYTES } from '../changetracking/digest-map.js';
import { LifeboatError } from '../core/errors.js';
import { DiskFile } from '../io/disk-file.js';
import type { DiskSpec } from './config.js';

/**
 * The agent's side of reverse replication (docs/recovery.md, "Reprotect and
 * failback"): its disks are the target. It posts the digests of its disks (SHA-256
 * per 64 KiB block, read from each disk's `file`), writes the blocks it pulls from the
 * vault (write, fsync, then acknowledge: writing a block twice is harmless), and on
 * the way back to replication rebuilds each tracker's digest map from the disk, so
 * the next cut ships only what changes from then on.
 */

/** Digests per request body (256 KiB raw): well under the vault's 1 MiB body limit once in base64. */
export const DIGESTS_PER_PIECE = 8192;

export interface ReverseBlock {
  readonly sequence: number;
  /** The local disk name. */
  readonly disk: string;
  readonly offset: number;
  readonly data: Buffer;
}

export function diskFile(spec: DiskSpec): string {
  if (spec.file === undefined) {
    throw new LifeboatError('CONFIG_INVALID', `disk ${spec.name} has no file for reverse replication: set disks[].file in agent.json`, { details: { disk: spec.name } });
  }
  return spec.file;
}

/** Opens a disk's file for its digests (DiskFile: image file or block device). */
export function openDiskFile(spec: DiskSpec): Promise<DiskFile> {
  return DiskFile.open(diskFile(spec));
}

/** Writes the blocks to their disks' files and fsyncs each file touched before resolving. */
export async function writeBlocks(specs: readonly DiskSpec[], blocks: readonly ReverseBlock[]): Promise<number> {
  const byDisk = new Map<string, ReverseBlock[]>();
  for (const b of blocks) byDisk.set(b.disk, [...(byDisk.get(b.disk) ?? []), b]);
  let bytes = 0;
  for (const [name, list] of byDisk) {
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new LifeboatError('API_ERROR', `the vault sent a block of disk ${name}, which this agent does not have`, { details: { disk: name } });
    const h = await open(diskFile(spec), 'r+');
    try {
      for (const b of list) {
        let done = 0;
        while (done < b.data.length) done += (await h.write(b.data, done, b.data.length - done, b.offset + done)).bytesWritten;
        bytes += b.data.length;
      }
      await h.sync();
    } finally {
      await h.close();
    }
  }
  return bytes;
}

/** Where a tracker keeps its digest map, under the tracker's state directory (src/changetracking/*). */
export function digestMapDir(spec: DiskSpec, trackerStateDir: string): string {
  return spec.tracker.kind === 'journal' ? join(trackerStateDir, 'digests') : trackerStateDir;
}

/**
 * Rebuilds the digest map of a disk from its file, as a staged cut applied whole:
 * afterwards the map says the replica holds exactly what the disk holds (true once
 * failback wrote the replica into the store as the newest point), so the tracker's
 * next cut ships only later writes, and a full compare (a tracker that lost
 * continuity, e.g. the journal tracker seeing its image changed) ships nothing more.
 */
export async function rebuildDigestMap(spec: DiskSpec, trackerStateDir: string, cutId: string, signal?: AbortSignal): Promise<void> {
  const file = await openDiskFile(spec);
  const map = await DigestMap.open(digestMapDir(spec, trackerStateDir));
  try {
    const staged = await map.stage(cutId, file.sizeBytes);
    const chunksPerRead = 1024; // 4 MiB
    const chunks = Math.ceil(file.sizeBytes / CHUNK_BYTES);
    for (let first = 0; first < chunks; first += chunksPerRead) {
      signal?.throwIfAborted();
      const n = Math.min(chunksPerRead, chunks - first);
      const offset = first * CHUNK_BYTES;
      const data = await file.read(offset, Math.min(n * CHUNK_BYTES, file.sizeBytes - offset));
      const digests = Buffer.alloc(n * DIGEST_BYTES);
      for (let i = 0; i < n; i++) chunkDigestInto(data.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES), digests, i * DIGEST_BYTES);
      await staged.add(first, digests);
    }
    await staged.seal();
    await map.apply(cutId);
  } finally {
    await map.close();
    await file.close();
  }
}
