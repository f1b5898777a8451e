import type { BlockSource, Extent } from '../../src/core/block-source.js';
import { PointReader } from '../../src/store/point-reader.js';
import type { PointManifest } from '../../src/format/manifest.js';
import type { Repository } from '../../src/store/repository.js';

/**
 * A disk held in memory as a BlockSource. Ranges listed in `allocated` are
 * reported as data; the rest is reported as holes, which is how a sparse image
 * file looks to backup. The bytes of a hole must be zero (callers keep it so).
 */
export class MemorySource implements BlockSource {
  readonly sizeBytes: number;

  constructor(
    readonly bytes: Buffer,
    private readonly allocated: readonly { offset: number; length: number }[] = [{ offset: 0, length: bytes.length }],
  ) {
    this.sizeBytes = bytes.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.sizeBytes) throw new RangeError(`read [${offset}, ${offset + length}) outside the disk`);
    return Buffer.from(this.bytes.subarray(offset, offset + length));
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const end = Math.min(offset + length, this.sizeBytes);
    const data = [...this.allocated]
      .map((a) => ({ start: Math.max(offset, a.offset), end: Math.min(end, a.offset + a.length) }))
      .filter((a) => a.start < a.end)
      .sort((a, b) => a.start - b.start);
    const out: Extent[] = [];
    let pos = offset;
    for (const a of data) {
      const start = Math.max(pos, a.start);
      if (start >= a.end) continue;
      if (start > pos) out.push({ offset: pos, length: start - pos, zero: true });
      out.push({ offset: start, length: a.end - start, zero: false });
      pos = a.end;
    }
    if (pos < end) out.push({ offset: pos, length: end - pos, zero: true });
    return out;
  }

  async close(): Promise<void> {}
}

/** Every byte of a point, read through PointReader the way restore reads it. */
export async function readPoint(repo: Repository, manifest: PointManifest, step = 256 * 1024): Promise<Buffer> {
  const reader = await PointReader.open(repo, manifest);
  try {
    const parts: Buffer[] = [];
    for (let o = 0; o < reader.sizeBytes; o += step) parts.push(await reader.read(o, Math.min(step, reader.sizeBytes - o)));
    return Buffer.concat(parts, reader.sizeBytes);
  } finally {
    await reader.close();
  }
}
