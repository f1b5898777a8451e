import { Compressor, decompress } from 'zstd-napi';
import { LifeboatError } from '../core/errors.js';

/**
 * Permanent codec ids (docs/format/store.md). Never renumber; add new ids only.
 */
export const CODEC_NONE = 0;
export const CODEC_ZSTD = 1;
export type CodecId = typeof CODEC_NONE | typeof CODEC_ZSTD;

/** zstd level used for chunk data: level 1 is near memory speed here (docs/benchmarks.md). */
export const ZSTD_LEVEL = 1;

/**
 * Compresses `data` with zstd, returning the raw bytes and CODEC_NONE when
 * compression saves less than 1/32 of the size (random data, encrypted files).
 */
let compressor: Compressor | undefined;

export function encode(data: Buffer): { codec: CodecId; payload: Buffer } {
  // One context per thread, reused: creating one per call costs more than compressing 4 KiB.
  if (!compressor) {
    compressor = new Compressor();
    compressor.setParameters({ compressionLevel: ZSTD_LEVEL });
  }
  const packed = compressor.compress(data);
  if (packed.length + (data.length >> 5) < data.length) return { codec: CODEC_ZSTD, payload: packed };
  return { codec: CODEC_NONE, payload: data };
}

export function decode(codec: number, payload: Buffer, expectedLength?: number): Buffer {
  let out: Buffer;
  if (codec === CODEC_NONE) out = payload;
  else if (codec === CODEC_ZSTD) {
    try {
      out = decompress(payload);
    } catch (err) {
      throw new LifeboatError('CORRUPT_OBJECT', 'zstd payload does not decompress', { cause: err });
    }
  } else throw new LifeboatError('CORRUPT_OBJECT', `unknown codec id ${codec}`, { details: { codec } });
  if (expectedLength !== undefined && out.length !== expectedLength) {
    throw new LifeboatError('CORRUPT_OBJECT', `decoded ${out.length} bytes, expected ${expectedLength}`);
  }
  return out;
}
