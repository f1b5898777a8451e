import { createHash } from 'node:crypto';

/**
 * The digest grid of reverse replication (docs/replication.md, "Reverse replication"):
 * SHA-256 of each 64 KiB block of a disk, the last block over its actual length. The
 * agent computes it over the primary's disk and posts it; the vault computes it over
 * the replica's disk and compares. One definition, so both sides hash the same bytes.
 */
export const DIGEST_BLOCK_BYTES = 64 * 1024;
export const DIGEST_SHA256_BYTES = 32;
/** Blocks read at once (4 MiB). */
const READ_BLOCKS = 64;

export interface DigestSource {
  readonly sizeBytes: number;
  read(offset: number, length: number): Promise<Buffer>;
}

/** The digests of `source`'s blocks, in pieces of at most `blocksPerPiece` digests. */
export async function* blockDigests(source: DigestSource, blocksPerPiece: number, signal?: AbortSignal): AsyncGenerator<{ firstBlock: number; digests: Buffer }> {
  const blocks = Math.ceil(source.sizeBytes / DIGEST_BLOCK_BYTES);
  for (let first = 0; first < blocks; first += blocksPerPiece) {
    const count = Math.min(blocksPerPiece, blocks - first);
    const out = Buffer.alloc(count * DIGEST_SHA256_BYTES);
    for (let i = 0; i < count; i += READ_BLOCKS) {
      signal?.throwIfAborted();
      const n = Math.min(READ_BLOCKS, count - i);
      const offset = (first + i) * DIGEST_BLOCK_BYTES;
      const data = await source.read(offset, Math.min(n * DIGEST_BLOCK_BYTES, source.sizeBytes - offset));
      for (let j = 0; j < n; j++) {
        createHash('sha256')
          .update(data.subarray(j * DIGEST_BLOCK_BYTES, (j + 1) * DIGEST_BLOCK_BYTES))
          .digest()
          .copy(out, (i + j) * DIGEST_SHA256_BYTES);
      }
    }
    yield { firstBlock: first, digests: out };
  }
}

/** Every digest of `source` in one buffer. */
export async function allBlockDigests(source: DigestSource, signal?: AbortSignal): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const piece of blockDigests(source, Number.MAX_SAFE_INTEGER, signal)) pieces.push(piece.digests);
  return Buffer.concat(pieces);
}
