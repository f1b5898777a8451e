import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { ReplicationClient } from '../../src/protocol/client.js';
import { encodeFrameBuffer, FrameDecoder, FrameType, type Frame } from '../../src/protocol/frame.js';
import { parseHello, parseSegment } from '../../src/protocol/messages.js';
import { LifeboatError } from '../../src/core/errors.js';
import { TestCa } from '../helpers/pki.js';

/** A scripted process server: it answers HELLO with WELCOME and lets the test decide the rest. */
async function fakeServer(ca: TestCa): Promise<{ port: number; frames: Frame[]; socket: Promise<TLSSocket>; close(): void }> {
  const cert = await ca.serverCert();
  const frames: Frame[] = [];
  let gotSocket!: (s: TLSSocket) => void;
  const socket = new Promise<TLSSocket>((resolve) => (gotSocket = resolve));
  const server = createServer({ cert: cert.certPem, key: cert.keyPem, ca: ca.caPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => {
    const decoder = new FrameDecoder();
    s.on('data', (d: Buffer) => {
      for (const f of decoder.push(d)) {
        frames.push(f);
        if (f.type === FrameType.HELLO) {
          const hello = parseHello(f);
          s.write(encodeFrameBuffer(FrameType.WELCOME, { disks: hello.disks.map((x) => ({ ...x, ackedSequence: 0 })) }));
          gotSocket(s);
        }
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { port: (server.address() as AddressInfo).port, frames, socket, close: () => server.close() };
}

const segment = (sequence: number) => ({
  disk: 'i.sda',
  generation: 1,
  sequence,
  flags: 0,
  diskSizeBytes: 1 << 20,
  capturedAtMs: 1,
  extents: [{ offset: 0, data: Buffer.alloc(1000, sequence) }],
});

test('the client keeps at most `window` segments in flight, resolves on ACK and surfaces ERROR with its code', async () => {
  const ca = await TestCa.create();
  const agent = await ca.agentCert('m1');
  const fake = await fakeServer(ca);
  try {
    const client = await ReplicationClient.connect({
      host: '127.0.0.1',
      port: fake.port,
      servername: 'localhost',
      tls: { certPem: agent.certPem, keyPem: agent.keyPem, caPem: ca.caPem },
      machineId: 'm1',
      disks: [{ disk: 'i.sda', generation: 1 }],
      window: 4,
    });
    const socket = await fake.socket;
    const results = Array.from({ length: 10 }, (_, i) => client.sendSegment(segment(i + 1)).then((a) => a.sequence, (e: LifeboatError) => e));
    await new Promise((r) => setTimeout(r, 200));
    const segments = () => fake.frames.filter((f) => f.type === FrameType.SEGMENT).map((f) => parseSegment(f).sequence);
    assert.deepEqual(segments(), [1, 2, 3, 4]);
    socket.write(encodeFrameBuffer(FrameType.ACK, { disk: 'i.sda', generation: 1, sequence: 1 }));
    socket.write(encodeFrameBuffer(FrameType.ACK, { disk: 'i.sda', generation: 1, sequence: 2 }));
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(segments(), [1, 2, 3, 4, 5, 6]);
    assert.equal(client.ackedSequence('i.sda'), 2);
    socket.write(encodeFrameBuffer(FrameType.ERROR, { code: 'SPOOL_FULL', message: 'spool is full', disk: 'i.sda', sequence: 3 }));
    const settled = await Promise.all(results);
    assert.deepEqual(settled.slice(0, 2), [1, 2]);
    for (const r of settled.slice(2)) {
      assert.ok(r instanceof LifeboatError);
      assert.equal(r.code, 'SPOOL_FULL');
      assert.equal(r.retryable, true);
      assert.equal(r.details.remote, true);
    }
    assert.equal((await client.closed)?.code, 'SPOOL_FULL');
  } finally {
    fake.close();
  }
});
