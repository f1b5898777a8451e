import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CHUNK_ID_BYTES } from '../../src/format/crypto.js';
import {
  decodeIndex,
  decodePackHeader,
  decodeTrailer,
  encodeIndex,
  encodePackHeader,
  encodeTrailer,
  PACK_TRAILER_BYTES,
  type PackHeader,
} from '../../src/format/pack.js';
import { chunkCountFor, decodeDiskIndex, encodeDiskIndex, type DiskIndex } from '../../src/format/disk-index.js';
import { decodeSegment, encodeSegment, SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL, type JournalSegment } from '../../src/format/segment.js';
import { damaged, decodesOrRefuses, throwsCode } from './fuzz.js';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.oneof(fc.integer({ min: 0, max: 2 ** 32 }), fc.constantFrom(0, Number.MAX_SAFE_INTEGER), fc.maxSafeNat());
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b));

/** fc.record builds null-prototype objects; decoders build plain ones, and deepEqual compares prototypes. */
const rec = <T extends object>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> => fc.record(model).map((o) => ({ ...o }) as T);

const packHeaderArb: fc.Arbitrary<PackHeader> = fc
  .record({
    packId: bytes(16),
    sizeBytes: u64,
    createdAtMs: u64,
    frames: fc.array(rec({ offset: u64, length: u32 }), { maxLength: 12 }),
  })
  .chain((h) =>
    rec({
      packId: fc.constant(h.packId),
      sizeBytes: fc.constant(h.sizeBytes),
      createdAtMs: fc.constant(h.createdAtMs),
      frames: fc.constant(h.frames),
      // A chunk must name an existing frame: no frames, no chunks.
      chunks:
        h.frames.length === 0
          ? fc.constant([])
          : fc.array(rec({ id: bytes(CHUNK_ID_BYTES), frame: fc.nat({ max: h.frames.length - 1 }), innerOffset: u32, length: u32 }), {
              maxLength: 20,
            }),
    }),
  );

const diskIndexArb: fc.Arbitrary<DiskIndex> = fc
  .record({ chunkSizeBytes: fc.integer({ min: 1, max: 2 ** 32 - 1 }), chunks: fc.nat({ max: 300 }), tail: fc.nat() })
  .chain(({ chunkSizeBytes, chunks, tail }) => {
    // A disk size whose last chunk is partial as often as not.
    const diskSizeBytes = chunks === 0 ? 0 : (chunks - 1) * chunkSizeBytes + 1 + (tail % chunkSizeBytes);
    const count = chunkCountFor(diskSizeBytes, chunkSizeBytes);
    return bytes(count * CHUNK_ID_BYTES).map((ids) => ({ chunkSizeBytes, diskSizeBytes, ids }));
  });

const segmentArb: fc.Arbitrary<JournalSegment> = fc
  .record({ generation: u32, sequence: u64, diskSizeBytes: fc.integer({ min: 0, max: 2 ** 40 }), createdAtMs: u64 })
  .chain((s) =>
    rec({
      generation: fc.constant(s.generation),
      sequence: fc.constant(s.sequence),
      diskSizeBytes: fc.constant(s.diskSizeBytes),
      createdAtMs: fc.constant(s.createdAtMs),
      extents: fc.array(
        fc
          .uint8Array({ maxLength: Math.min(200, s.diskSizeBytes) })
          .chain((data) =>
            fc.integer({ min: 0, max: s.diskSizeBytes - data.length }).map((offset) => ({ offset, data: Buffer.from(data) })),
          ),
        { maxLength: 8 },
      ),
    }),
  );

test('pack header round-trips through encode/decode', () => {
  fc.assert(
    fc.property(packHeaderArb, (h) => {
      assert.deepEqual(decodePackHeader(encodePackHeader(h), 'pack'), h);
    }),
    { numRuns: 300 },
  );
});

test('index object round-trips a list of pack headers', () => {
  fc.assert(
    fc.property(fc.array(packHeaderArb, { maxLength: 6 }), (headers) => {
      assert.deepEqual(decodeIndex(encodeIndex(headers), 'index'), headers);
    }),
    { numRuns: 200 },
  );
});

test('disk index round-trips, including partial last chunks and empty disks', () => {
  fc.assert(
    fc.property(diskIndexArb, (ix) => {
      assert.deepEqual(decodeDiskIndex(encodeDiskIndex(ix), 'disk index'), ix);
    }),
    { numRuns: 300 },
  );
});

test('disk index whose chunk count disagrees with its geometry is refused', () => {
  const ix: DiskIndex = { chunkSizeBytes: 4096, diskSizeBytes: 3 * 4096 + 1, ids: Buffer.alloc(3 * CHUNK_ID_BYTES) };
  throwsCode(() => decodeDiskIndex(encodeDiskIndex(ix), 'disk index'), 'CORRUPT_OBJECT');
  throwsCode(() => decodeDiskIndex(encodeDiskIndex({ chunkSizeBytes: 0, diskSizeBytes: 0, ids: Buffer.alloc(0) }), 'disk index'), 'CORRUPT_OBJECT');
});

test('journal segment round-trips', () => {
  fc.assert(
    fc.property(segmentArb, (s) => {
      assert.deepEqual(decodeSegment(encodeSegment(s), 'segment'), s);
    }),
    { numRuns: 300 },
  );
});

test('journal segment flags round-trip; unknown flag bits are refused', () => {
  const base: JournalSegment = { generation: 2, sequence: 9, diskSizeBytes: 8192, createdAtMs: 1234, extents: [{ offset: 4096, data: Buffer.alloc(10, 7) }] };
  for (const flags of [SEGMENT_PARTIAL, SEGMENT_CONTINUES, SEGMENT_APP_CONSISTENT, SEGMENT_PARTIAL | SEGMENT_CONTINUES, SEGMENT_CONTINUES | SEGMENT_APP_CONSISTENT]) {
    assert.equal(decodeSegment(encodeSegment({ ...base, flags }), 'segment').flags, flags);
  }
  // Flags 0 (every segment written before flags existed) decode as absent: a whole cut.
  assert.equal(decodeSegment(encodeSegment(base), 'segment').flags, undefined);
  throwsCode(() => decodeSegment(encodeSegment({ ...base, flags: 8 }), 'segment'), 'CORRUPT_OBJECT');
});

test('journal segment with an extent past the disk end is refused', () => {
  const s: JournalSegment = { generation: 1, sequence: 1, diskSizeBytes: 100, createdAtMs: 0, extents: [{ offset: 90, data: Buffer.alloc(11) }] };
  throwsCode(() => decodeSegment(encodeSegment(s), 'segment'), 'CORRUPT_OBJECT');
});

test('pack trailer round-trips and refuses a header longer than the pack', () => {
  fc.assert(
    fc.property(u32, fc.integer({ min: 0, max: 2 ** 40 }), (len, extra) => {
      const t = encodeTrailer(len);
      assert.equal(t.length, PACK_TRAILER_BYTES);
      assert.equal(decodeTrailer(t, len + PACK_TRAILER_BYTES + extra, 'pack'), len);
      if (len > 0) throwsCode(() => decodeTrailer(t, len + PACK_TRAILER_BYTES - 1, 'pack'), 'CORRUPT_OBJECT');
    }),
  );
});

test('a newer format version is reported as STORE_UNSUPPORTED_VERSION, not as damage', () => {
  const bump = (b: Buffer): Buffer => {
    const c = Buffer.from(b);
    c.writeUInt16LE(2, 4); // every binary format: 4-byte magic, then u16 version
    return c;
  };
  throwsCode(() => decodePackHeader(bump(encodePackHeader({ packId: Buffer.alloc(16), sizeBytes: 0, createdAtMs: 0, frames: [], chunks: [] })), 'p'), 'STORE_UNSUPPORTED_VERSION');
  throwsCode(() => decodeIndex(bump(encodeIndex([])), 'i'), 'STORE_UNSUPPORTED_VERSION');
  throwsCode(() => decodeDiskIndex(bump(encodeDiskIndex({ chunkSizeBytes: 4096, diskSizeBytes: 0, ids: Buffer.alloc(0) })), 'd'), 'STORE_UNSUPPORTED_VERSION');
  throwsCode(
    () => decodeSegment(bump(encodeSegment({ generation: 0, sequence: 1, diskSizeBytes: 0, createdAtMs: 0, extents: [] })), 's'),
    'STORE_UNSUPPORTED_VERSION',
  );
});

const decoders: [string, (b: Buffer) => unknown, fc.Arbitrary<Buffer>][] = [
  ['decodePackHeader', (b) => decodePackHeader(b, 'pack'), packHeaderArb.map(encodePackHeader)],
  ['decodeIndex', (b) => decodeIndex(b, 'index'), fc.array(packHeaderArb, { maxLength: 3 }).map(encodeIndex)],
  ['decodeDiskIndex', (b) => decodeDiskIndex(b, 'disk index'), diskIndexArb.map(encodeDiskIndex)],
  ['decodeSegment', (b) => decodeSegment(b, 'segment'), segmentArb.map(encodeSegment)],
  ['decodeTrailer', (b) => decodeTrailer(b, 1000, 'pack'), fc.nat({ max: 2000 }).map(encodeTrailer)],
];

for (const [name, decode, valid] of decoders) {
  test(`${name} given random bytes throws only CORRUPT_OBJECT or STORE_UNSUPPORTED_VERSION`, () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (raw) => decodesOrRefuses(() => decode(Buffer.from(raw)))),
      { numRuns: 500 },
    );
  });

  test(`${name} given a damaged valid encoding throws only CORRUPT_OBJECT or STORE_UNSUPPORTED_VERSION`, () => {
    fc.assert(
      fc.property(
        valid.chain((v) => damaged(v)),
        (raw) => decodesOrRefuses(() => decode(raw)),
      ),
      { numRuns: 500 },
    );
  });
}

test('random bytes behind a valid magic and version still only refuse', () => {
  const heads = ['LBPH', 'LBIX', 'LBDI', 'LBJS'].map((m) => Buffer.concat([Buffer.from(m), Buffer.from([1, 0, 0, 0])]));
  fc.assert(
    fc.property(fc.constantFrom(0, 1, 2, 3), fc.uint8Array({ maxLength: 400 }), (which, tail) => {
      const buf = Buffer.concat([heads[which] as Buffer, tail]);
      const decode = [decodePackHeader, decodeIndex, decodeDiskIndex, decodeSegment][which] as (b: Buffer, w: string) => unknown;
      decodesOrRefuses(() => decode(buf, 'x'));
    }),
    { numRuns: 1000 },
  );
});
