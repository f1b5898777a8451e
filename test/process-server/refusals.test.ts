import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { connectionError } from '../../src/protocol/client.js';
import { encodeFrameBuffer, FrameDecoder, FrameType, framePrefix, type Frame } from '../../src/protocol/frame.js';
import { parseError, segmentFrameParts } from '../../src/protocol/messages.js';
import { writeSegment, processJournal } from '../../src/store/journal.js';
import { rejectsCode } from '../format/fuzz.js';
import { TestCa } from '../helpers/pki.js';
import { DISK, harness, MACHINE, makeSegment, spoolFiles, storedSegments, waitFor, type Harness } from './harness.js';

interface RawResult {
  frames: Frame[];
  closed: boolean;
  error?: Error;
}

/** Opens a TLS connection with the agent certificate, writes `chunks` (then ends), and collects what comes back until the server closes. */
async function raw(h: Harness, chunks: Buffer[], options: { end?: boolean; cert?: boolean } = {}): Promise<RawResult> {
  const o = h.clientOptions();
  const socket = tlsConnect({
    host: o.host,
    port: o.port,
    servername: 'localhost',
    ca: o.tls.caPem,
    ...(options.cert === false ? {} : { cert: o.tls.certPem, key: o.tls.keyPem }),
    minVersion: 'TLSv1.3',
  });
  const decoder = new FrameDecoder();
  const result: RawResult = { frames: [], closed: false };
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(result);
    }, 10_000);
    socket.on('secureConnect', () => {
      for (const c of chunks) socket.write(c);
      if (options.end !== false) socket.end();
    });
    socket.on('data', (d: Buffer) => {
      try {
        result.frames.push(...decoder.push(d));
      } catch (err) {
        result.error = err as Error;
      }
    });
    socket.on('error', (err) => (result.error = err));
    socket.on('close', () => {
      clearTimeout(timer);
      result.closed = true;
      resolve(result);
    });
  });
}

function hello(extra: Record<string, unknown> = {}): Buffer {
  return encodeFrameBuffer(FrameType.HELLO, { protocol: 1, machineId: MACHINE, disks: [{ disk: DISK, generation: 1 }], clockMs: Date.now(), ...extra });
}

function segmentFrame(header: Record<string, unknown>, body: Buffer): Buffer {
  return encodeFrameBuffer(FrameType.SEGMENT, header, body);
}

/** Asserts the connection ended with one ERROR of `code` (after WELCOME when `welcomed`), and nothing was spooled or stored. */
async function assertRefused(h: Harness, r: RawResult, code: string, welcomed: boolean): Promise<void> {
  assert.ok(r.closed, 'the connection is closed');
  const types = r.frames.map((f) => f.type);
  assert.deepEqual(types, welcomed ? [FrameType.WELCOME, FrameType.ERROR] : [FrameType.ERROR], `frames ${types.join(',')}`);
  const err = parseError(r.frames[r.frames.length - 1] as Frame);
  assert.equal(err.code, code, err.message);
  assert.ok(err.message.length > 10);
  assert.deepEqual(await spoolFiles(h.spoolDir), []);
  assert.equal(h.server.stats().segmentsIn, 0);
  assert.equal((await storedSegments(h.repo)).length, 0);
}

test('malformed frames: an ERROR with PROTOCOL_INVALID, the connection closed, nothing spooled', async () => {
  const h = await harness();
  try {
    const good = segmentFrameParts(makeSegment(1));
    const header = good.header as unknown as Record<string, unknown>;
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    const oversized = Buffer.alloc(9);
    oversized.writeUInt32BE(0xffffffff, 0);
    oversized.writeUInt8(FrameType.SEGMENT, 4);
    const cases: [string, Buffer[], boolean][] = [
      ['oversized length claim first', [oversized], false],
      ['oversized length claim after HELLO', [hello(), oversized], true],
      ['bad JSON', [Buffer.concat([framePrefix(FrameType.HELLO, 5, 0), Buffer.from('{"a":')])], false],
      ['unknown type', [Buffer.from([0, 0, 0, 7, 42, 0, 0, 0, 2, 0x7b, 0x7d])], false],
      ['truncated HELLO', [hello().subarray(0, 20)], false],
      ['truncated SEGMENT', [hello(), segmentFrame(header, good.body).subarray(0, 5000)], true],
      ['SEGMENT before HELLO', [segmentFrame(header, good.body)], false],
      ['PING before HELLO', [encodeFrameBuffer(FrameType.PING, { at: 1 })], false],
      ['HELLO of protocol 2', [hello({ protocol: 2 })], false],
      ['sha256 mismatch', [hello(), segmentFrame({ ...header, sha256: sha(Buffer.alloc(good.body.length)) }, good.body)], true],
      ['body length mismatch', [hello(), segmentFrame(header, good.body.subarray(100))], true],
      ['overlapping extents', [hello(), segmentFrame({ ...header, extents: [{ offset: 0, length: 65536 }, { offset: 60000, length: 4096 }] }, good.body)], true],
      ['extents past diskSizeBytes', [hello(), segmentFrame({ ...header, diskSizeBytes: 4096 }, good.body)], true],
      ['a WELCOME from the agent', [hello(), encodeFrameBuffer(FrameType.WELCOME, { disks: [] })], true],
      ['a disk not in HELLO', [hello(), segmentFrame(segmentFrameParts(makeSegment(1, { disk: 'item1.sdb' })).header as unknown as Record<string, unknown>, good.body)], true],
    ];
    for (const [what, chunks, welcomed] of cases) {
      const r = await raw(h, chunks);
      await assertRefused(h, r, 'PROTOCOL_INVALID', welcomed).catch((err: Error) => {
        throw new Error(`${what}: ${err.message} (socket error: ${String(r.error)})`);
      });
    }
  } finally {
    await h.cleanup();
  }
});

test('random bytes after HELLO are refused and never spooled', async () => {
  const h = await harness();
  try {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 3000 }), async (bytes) => {
        const r = await raw(h, [hello(), Buffer.from(bytes)]);
        assert.ok(r.closed);
        assert.equal(r.frames[0]?.type, FrameType.WELCOME);
        const last = r.frames[r.frames.length - 1] as Frame;
        assert.equal(last.type, FrameType.ERROR);
        assert.equal(parseError(last).code, 'PROTOCOL_INVALID');
        assert.equal(h.server.stats().segmentsIn, 0);
      }),
      { numRuns: 25 },
    );
    assert.deepEqual(await spoolFiles(h.spoolDir), []);
  } finally {
    await h.cleanup();
  }
});

test('replayed and out-of-order sequences are refused with their codes', async () => {
  const h = await harness();
  try {
    const client = await h.connect();
    await client.sendSegment(makeSegment(1));
    await client.sendSegment(makeSegment(2));
    const replay = await rejectsCode(client.sendSegment(makeSegment(2)), 'SEQUENCE_REPLAYED');
    assert.equal(replay.details.sequence, 2);
    assert.equal((await client.closed)?.code, 'SEQUENCE_REPLAYED');

    const skip = await h.connect();
    assert.equal(skip.ackedSequence(DISK), 2);
    await rejectsCode(skip.sendSegment(makeSegment(4)), 'SEQUENCE_OUT_OF_ORDER');
    await h.server.drained();
    assert.deepEqual(
      (await storedSegments(h.repo)).map((s) => s.sequence),
      [1, 2],
    );
    assert.equal(h.server.stats().segmentsIn, 2);
  } finally {
    await h.cleanup();
  }
});

test('agents without a valid certificate, with a replaced one, or for other disks are AGENT_UNAUTHORIZED', async () => {
  const h = await harness();
  try {
    // No client certificate.
    await assertRefused(h, await raw(h, [hello()], { cert: false }), 'AGENT_UNAUTHORIZED', false);
    // A TLS alert refusing the certificate maps to the same code on the agent's side.
    assert.equal(connectionError(Object.assign(new Error('alert'), { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' }), 'ps').code, 'AGENT_UNAUTHORIZED');

    // A certificate from another CA.
    const other = await TestCa.create('Another CA');
    const foreign = await other.agentCert(MACHINE);
    await rejectsCode(h.connect({ tls: { certPem: foreign.certPem, keyPem: foreign.keyPem, caPem: h.pki.ca.caPem } }), 'AGENT_UNAUTHORIZED');

    // A certificate whose serial the vault no longer knows (re-enrolled).
    const machine = h.backend.machines.get(MACHINE)!;
    h.backend.machines.set(MACHINE, { ...machine, serial: 'abc123' });
    await rejectsCode(h.connect(), 'AGENT_UNAUTHORIZED');
    h.backend.machines.set(MACHINE, machine);

    // HELLO naming another machine than the certificate.
    await rejectsCode(h.connect({ machineId: 'm-0002' }), 'AGENT_UNAUTHORIZED');
    // A disk that is not the machine's.
    await rejectsCode(h.connect({ disks: [{ disk: 'item9.sda', generation: 1 }] }), 'AGENT_UNAUTHORIZED');
    // An agent certificate issued by our CA for a machine the vault does not know.
    const stranger = await h.pki.ca.agentCert('m-9999');
    await rejectsCode(h.connect({ machineId: 'm-9999', tls: { certPem: stranger.certPem, keyPem: stranger.keyPem, caPem: h.pki.ca.caPem } }), 'AGENT_UNAUTHORIZED');

    assert.deepEqual(await spoolFiles(h.spoolDir), []);
    assert.equal(h.server.stats().connectedAgents, 0);
    // The legitimate agent still gets in.
    const ok = await h.connect();
    await ok.sendSegment(makeSegment(1));
    await ok.close();
  } finally {
    await h.cleanup();
  }
});

test('a fenced generation and a skewed clock are refused at HELLO', async () => {
  const h = await harness({ generation: 2 });
  try {
    await rejectsCode(h.connect({ disks: [{ disk: DISK, generation: 1 }] }), 'GENERATION_FENCED');
    const skew = await rejectsCode(h.connect({ disks: [{ disk: DISK, generation: 2 }], now: () => Date.now() + 6 * 60_000 }), 'CLOCK_SKEW');
    assert.match(skew.message, /clock/);
    await rejectsCode(h.connect({ disks: [{ disk: DISK, generation: 2 }], now: () => Date.now() - 6 * 60_000 }), 'CLOCK_SKEW');
    // Within 5 minutes is fine.
    const ok = await h.connect({ disks: [{ disk: DISK, generation: 2 }], now: () => Date.now() + 4 * 60_000 });
    await ok.close();
    assert.deepEqual(await spoolFiles(h.spoolDir), []);
  } finally {
    await h.cleanup();
  }
});

test('a generation the store fences on upload is dropped and refused from then on', async () => {
  const h = await harness();
  try {
    // The item was failed over: the store has a point of generation 2.
    await writeSegment(h.repo, DISK, { generation: 2, sequence: 1, diskSizeBytes: 1 << 20, extents: [{ offset: 0, data: Buffer.alloc(4096, 9) }] });
    assert.ok(await processJournal(h.repo, DISK));
    const client = await h.connect();
    await client.sendSegment(makeSegment(1)); // acknowledged: the spool has it
    await waitFor('the upload to be fenced', () => h.server.stats().uploadErrors > 0);
    await h.server.drained();
    assert.match(h.server.stats().lastUploadError ?? '', /GENERATION_FENCED/);
    assert.deepEqual(await spoolFiles(h.spoolDir), []);
    await rejectsCode(client.sendSegment(makeSegment(2)), 'GENERATION_FENCED');
    await rejectsCode(h.connect(), 'GENERATION_FENCED');
    await h.restart();
    await rejectsCode(h.connect(), 'GENERATION_FENCED'); // remembered across restarts
    assert.deepEqual(
      (await storedSegments(h.repo)).map((s) => [s.generation, s.sequence]),
      [[2, 1]],
    );
  } finally {
    await h.cleanup();
  }
});

test('a dead process server is detected by the missing PONG', async () => {
  const h = await harness();
  // A TCP relay between agent and process server that can go silent, like a cut network.
  const links: Socket[] = [];
  const relay = createNetServer((inbound) => {
    const outbound = netConnect(h.server.port, '127.0.0.1');
    links.push(inbound, outbound);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', () => resolve()));
  try {
    const client = await h.connect({ port: (relay.address() as AddressInfo).port, pingIntervalMs: 50, deadPeerTimeoutMs: 400 });
    await client.sendSegment(makeSegment(1));
    await new Promise((r) => setTimeout(r, 600)); // PINGs answered: still alive
    for (const l of links) {
      l.unpipe();
      l.pause();
    }
    const err = await client.closed;
    assert.equal(err?.code, 'SERVER_UNREACHABLE');
    assert.equal(err?.retryable, true);
    assert.match(err?.message ?? '', /did not answer/);
    await rejectsCode(client.sendSegment(makeSegment(2)), 'SERVER_UNREACHABLE');
  } finally {
    for (const l of links) l.destroy();
    relay.close();
    await h.cleanup();
  }
});
