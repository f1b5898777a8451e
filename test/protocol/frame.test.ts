import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { LifeboatError } from '../../src/core/errors.js';
import {
  decodeOneFrame,
  encodeFrameBuffer,
  FrameDecoder,
  FrameType,
  framePrefix,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  MAX_SEGMENT_DATA_BYTES,
  type Frame,
} from '../../src/protocol/frame.js';
import { parseHello, parseSegment, segmentFrameParts, parsePing, parseError, parseAck, parseWelcome, type OutgoingSegment } from '../../src/protocol/messages.js';
import { throwsCode } from '../format/fuzz.js';

function segmentFrame(seg: OutgoingSegment): Frame {
  const { header, body } = segmentFrameParts(seg);
  return decodeOneFrame(encodeFrameBuffer(FrameType.SEGMENT, header as unknown as Record<string, unknown>, body));
}

function rawSegment(header: Record<string, unknown>, body: Buffer): Frame {
  return decodeOneFrame(encodeFrameBuffer(FrameType.SEGMENT, header, body));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('frames round-trip through the decoder however the stream is cut', () => {
  const frameArb = fc.record({
    type: fc.constantFrom(FrameType.HELLO, FrameType.ACK, FrameType.PING, FrameType.SEGMENT),
    header: fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.integer(), fc.string({ maxLength: 20 }), fc.boolean()), { maxKeys: 5 }),
    body: fc.uint8Array({ maxLength: 300 }),
  });
  fc.assert(
    fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }), (frames, cuts) => {
      const wire = Buffer.concat(
        frames.map((f) => encodeFrameBuffer(f.type, f.header, f.type === FrameType.SEGMENT ? Buffer.from(f.body) : Buffer.alloc(0))),
      );
      const decoder = new FrameDecoder();
      const out: Frame[] = [];
      let at = 0;
      for (let i = 0; at < wire.length; i++) {
        const n = cuts[i % cuts.length] as number;
        out.push(...decoder.push(wire.subarray(at, at + n)));
        at += n;
      }
      decoder.end();
      assert.equal(out.length, frames.length);
      out.forEach((f, i) => {
        const want = frames[i] as (typeof frames)[number];
        assert.equal(f.type, want.type);
        assert.deepEqual(f.header, JSON.parse(JSON.stringify(want.header)));
        assert.deepEqual([...f.body], want.type === FrameType.SEGMENT ? [...want.body] : []);
      });
    }),
  );
});

test('random bytes are decoded or refused with PROTOCOL_INVALID, never anything else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
      const decoder = new FrameDecoder();
      try {
        decoder.push(Buffer.from(bytes));
        decoder.end();
      } catch (err) {
        assert.ok(err instanceof LifeboatError, String(err));
        assert.equal(err.code, 'PROTOCOL_INVALID');
      }
    }),
    { numRuns: 2000 },
  );
});

test('oversized length claims are refused from the prefix alone, before buffering', () => {
  const decoder = new FrameDecoder();
  const claim = Buffer.alloc(9);
  claim.writeUInt32BE(0xffffffff, 0);
  claim.writeUInt8(FrameType.SEGMENT, 4);
  claim.writeUInt32BE(2, 5);
  throwsCode(() => decoder.push(claim), 'PROTOCOL_INVALID');
  assert.equal(decoder.bufferedBytes, 0);
  throwsCode(() => decoder.push(Buffer.from('{}')), 'PROTOCOL_INVALID'); // a broken stream stays broken

  throwsCode(() => new FrameDecoder().push(framePrefix(FrameType.SEGMENT, 2, MAX_SEGMENT_DATA_BYTES + 1)), 'PROTOCOL_INVALID');
  throwsCode(() => new FrameDecoder().push(framePrefix(FrameType.HELLO, MAX_HEADER_BYTES + 1, 0)), 'PROTOCOL_INVALID');
  throwsCode(() => new FrameDecoder().push(framePrefix(FrameType.PING, 2, 1)), 'PROTOCOL_INVALID'); // only SEGMENT has a body
  const header = Buffer.alloc(9);
  header.writeUInt32BE(MAX_FRAME_BYTES, 0);
  header.writeUInt8(FrameType.HELLO, 4);
  header.writeUInt32BE(MAX_FRAME_BYTES, 5); // header longer than the frame
  throwsCode(() => new FrameDecoder().push(header), 'PROTOCOL_INVALID');
  const short = Buffer.alloc(9);
  short.writeUInt32BE(3, 0);
  short.writeUInt8(FrameType.HELLO, 4);
  throwsCode(() => new FrameDecoder().push(short), 'PROTOCOL_INVALID');
  throwsCode(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 7, 9, 0, 0, 0, 2])), 'PROTOCOL_INVALID'); // unknown type
});

test('truncated frames, bad JSON and non-object headers are PROTOCOL_INVALID', () => {
  const full = encodeFrameBuffer(FrameType.PING, { at: 1 });
  for (let cut = 1; cut < full.length; cut++) {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(full.subarray(0, cut)), []);
    throwsCode(() => decoder.end(), 'PROTOCOL_INVALID');
  }
  const bad = (text: string): Buffer => Buffer.concat([framePrefix(FrameType.PING, Buffer.byteLength(text), 0), Buffer.from(text)]);
  for (const text of ['{', '[]', 'null', '42', '"x"', '{"at":1}x']) throwsCode(() => new FrameDecoder().push(bad(text)), 'PROTOCOL_INVALID');
  throwsCode(() => new FrameDecoder().push(Buffer.concat([framePrefix(FrameType.PING, 2, 0), Buffer.from([0xff, 0xfe])])), 'PROTOCOL_INVALID');
});

const goodSegment: OutgoingSegment = {
  disk: 'item1.sda',
  generation: 3,
  sequence: 7,
  flags: 0,
  diskSizeBytes: 1 << 20,
  capturedAtMs: 1_700_000_000_000,
  extents: [
    { offset: 0, data: Buffer.alloc(4096, 1) },
    { offset: 8192, data: Buffer.alloc(100, 2) },
  ],
};

test('a valid segment parses; every broken field is refused', () => {
  const parsed = parseSegment(segmentFrame(goodSegment));
  assert.deepEqual(parsed.extents, [
    { offset: 0, length: 4096 },
    { offset: 8192, length: 100 },
  ]);
  const { header, body } = segmentFrameParts(goodSegment);
  const h = header as unknown as Record<string, unknown>;
  const broken: [string, Record<string, unknown>, Buffer][] = [
    ['sha256 mismatch', { ...h, sha256: sha(Buffer.alloc(body.length)) }, body],
    ['body too short', h, body.subarray(1)],
    ['overlapping extents', { ...h, extents: [{ offset: 0, length: 4096 }, { offset: 4000, length: 100 }] }, body],
    ['unsorted extents', { ...h, extents: [{ offset: 8192, length: 100 }, { offset: 0, length: 4096 }], sha256: sha(body) }, body],
    ['past the disk', { ...h, diskSizeBytes: 8192 + 99 }, body],
    ['negative offset', { ...h, extents: [{ offset: -1, length: 4096 }, { offset: 8192, length: 100 }] }, body],
    ['fractional sequence', { ...h, sequence: 1.5 }, body],
    ['zero sequence', { ...h, sequence: 0 }, body],
    ['string generation', { ...h, generation: '3' }, body],
    ['unknown flag', { ...h, flags: 8 }, body],
    ['unknown field', { ...h, extra: 1 }, body],
    ['missing field', { ...h, capturedAtMs: undefined }, body],
    ['empty extent', { ...h, extents: [{ offset: 0, length: 0 }] }, Buffer.alloc(0)],
    ['bad disk name', { ...h, disk: '../etc' }, body],
    ['uppercase sha', { ...h, sha256: sha(body).toUpperCase() }, body],
  ];
  for (const [what, header2, body2] of broken) {
    const err = throwsCode(() => parseSegment(rawSegment(JSON.parse(JSON.stringify(header2)) as Record<string, unknown>, body2)), 'PROTOCOL_INVALID');
    assert.ok(err.message.length > 0, what);
  }
  throwsCode(() => segmentFrameParts({ ...goodSegment, extents: [{ offset: 1 << 20, data: Buffer.alloc(1) }] }), 'PROTOCOL_INVALID');
});

test('HELLO, WELCOME, ACK, ERROR and PING headers are checked field by field', () => {
  const frame = (type: FrameType, header: Record<string, unknown>): Frame => decodeOneFrame(encodeFrameBuffer(type, header));
  const hello = { protocol: 1, machineId: 'm1', disks: [{ disk: 'i.sda', generation: 1 }], clockMs: 5 };
  assert.deepEqual(parseHello(frame(FrameType.HELLO, hello)), hello);
  for (const bad of [
    { ...hello, protocol: 2 },
    { ...hello, machineId: 7 },
    { ...hello, disks: [] },
    { ...hello, disks: [{ disk: 'i.sda', generation: 1 }, { disk: 'i.sda', generation: 2 }] },
    { ...hello, disks: [{ disk: 'i.sda', generation: -1 }] },
    { ...hello, clockMs: 1e300 },
    { ...hello, more: true },
  ]) {
    throwsCode(() => parseHello(frame(FrameType.HELLO, bad)), 'PROTOCOL_INVALID');
  }
  throwsCode(() => parseHello(frame(FrameType.ACK, hello)), 'PROTOCOL_INVALID');
  assert.deepEqual(parseWelcome(frame(FrameType.WELCOME, { disks: [{ disk: 'a', generation: 0, ackedSequence: 0 }] })).disks.length, 1);
  throwsCode(() => parseWelcome(frame(FrameType.WELCOME, { disks: [{ disk: 'a', generation: 0 }] })), 'PROTOCOL_INVALID');
  assert.equal(parseAck(frame(FrameType.ACK, { disk: 'a', generation: 0, sequence: 1 })).sequence, 1);
  throwsCode(() => parseAck(frame(FrameType.ACK, { disk: 'a', generation: 0, sequence: '1' })), 'PROTOCOL_INVALID');
  assert.equal(parseError(frame(FrameType.ERROR, { code: 'SPOOL_FULL', message: 'm', disk: 'a', sequence: 3 })).sequence, 3);
  throwsCode(() => parseError(frame(FrameType.ERROR, { code: 'X' })), 'PROTOCOL_INVALID');
  assert.equal(parsePing(frame(FrameType.PONG, { at: 9 })).at, 9);
  throwsCode(() => parsePing(frame(FrameType.PING, {})), 'PROTOCOL_INVALID');
});
