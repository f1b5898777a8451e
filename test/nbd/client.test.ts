/**
 * The NBD client against three real servers (qemu-storage-daemon, qemu-nbd,
 * our own src/nbd server) and against fake servers that misbehave.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isLifeboatError } from '../../src/core/errors.js';
import { QmpClient } from '../../src/changetracking/qemu/qmp.js';
import { NbdClient, nbdBlockSource } from '../../src/nbd/client.js';
import { NBD_MAGIC, NBD_OPTS_MAGIC, NBD_REP_ACK, NBD_REP_INFO, NBD_REP_MAGIC, NBD_STATE_ZERO } from '../../src/nbd/protocol.js';
import { startNbdServer } from '../../src/nbd/server.js';
import type { NbdServer } from '../../src/nbd/server.js';
import { freePort, makeTempDir } from '../helpers/env.js';
import { qemuTools, startQsd } from '../helpers/qsd.js';
import type { Qsd } from '../helpers/qsd.js';
import { FileBlockSource, IMAGE_SIZE, expectedImage, run, writeTestImage } from './fixtures.js';

const MiB = 1024 * 1024;

function assertCode(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(isLifeboatError(err), `expected LifeboatError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

describe('NBD client against qemu-storage-daemon', () => {
  const tmp = makeTempDir('nbd-client-qsd');
  let qsd: Qsd;
  let qmp: QmpClient;

  before(async () => {
    qsd = await startQsd({ dir: tmp.path, format: 'qcow2', sizeBytes: 64 * MiB });
    qmp = await QmpClient.connect({ socketPath: qsd.testQmpSocket });
    await qmp.execute('block-dirty-bitmap-add', { node: 'disk0', name: 'b0', granularity: 4096 });
    await qmp.execute('block-export-add', { type: 'nbd', id: 'bm', 'node-name': 'disk0', name: 'bm', writable: true, bitmaps: ['b0'] });
    await qsd.io(['write -P 0xab 8k 4k', 'write -P 0xcd 1M 12k', 'write -P 0xef 40M 1M', 'write -z 50M 64k']);
  });

  after(async () => {
    await qmp?.close();
    await qsd?.stop();
    tmp.cleanup();
  });

  it('reports the dirty bitmap extents exactly (4 KiB granularity)', async () => {
    const client = await NbdClient.connect({ target: { socketPath: qsd.nbdSocket }, exportName: 'bm', metaContexts: ['qemu:dirty-bitmap:b0'] });
    try {
      assert.equal(client.sizeBytes, 64 * MiB);
      assert.equal(client.info.structuredReplies, true);
      const extents = await client.extents('qemu:dirty-bitmap:b0');
      const dirty = extents.filter((e) => e.flags & 1).map((e) => [e.offset, e.length]);
      assert.deepEqual(dirty, [
        [8192, 4096],
        [MiB, 12288],
        [40 * MiB, MiB],
        [50 * MiB, 65536],
      ]);
      assert.equal(extents.reduce((n, e) => n + e.length, 0), 64 * MiB, 'extents cover the disk');
    } finally {
      await client.close();
    }
  });

  it('writes and flushes through a writable export; the data reads back', async () => {
    const client = await NbdClient.connect({ target: { socketPath: qsd.nbdSocket }, exportName: 'rw' });
    try {
      assert.equal(client.info.readOnly, false);
      const data = Buffer.alloc(40 * MiB, 0x3c);
      await client.write(60 * MiB, data.subarray(0, 64 * 1024));
      await client.flush();
      assert.ok((await client.read(60 * MiB, 64 * 1024)).equals(data.subarray(0, 64 * 1024)));
    } finally {
      await client.close();
    }
  });

  it('pipelines many reads and matches each reply to its request', async () => {
    const client = await NbdClient.connect({ target: { socketPath: qsd.nbdSocket }, exportName: 'rw' });
    try {
      const offsets = Array.from({ length: 64 }, (_, i) => (i % 2 === 0 ? 8192 : 40 * MiB + i * 4096));
      const reads = await Promise.all(offsets.map((o) => client.read(o, 4096)));
      reads.forEach((data, i) => assert.ok(data.every((b) => b === (i % 2 === 0 ? 0xab : 0xef)), `read ${i}`));
      // Longer than the 32 MiB request limit: split and pipelined.
      const big = await client.read(20 * MiB, 40 * MiB);
      assert.equal(big.length, 40 * MiB);
      assert.ok(big.subarray(20 * MiB, 21 * MiB).every((b) => b === 0xef));
      assert.ok(big.subarray(0, 20 * MiB).every((b) => b === 0));
      assert.ok(big.subarray(30 * MiB, 30 * MiB + 65536).every((b) => b === 0), 'zero write reads as zeros');
    } finally {
      await client.close();
    }
  });

  it('rejects a request outside the export and an unknown export', async () => {
    const client = await NbdClient.connect({ target: { socketPath: qsd.nbdSocket }, exportName: 'rw' });
    await assert.rejects(client.read(64 * MiB - 4096, 8192), assertCode('USAGE'));
    await client.close();
    await assert.rejects(NbdClient.connect({ target: { socketPath: qsd.nbdSocket }, exportName: 'nope' }), assertCode('NOT_FOUND'));
  });

  it('fails clearly when a meta context is not offered', async () => {
    await assert.rejects(
      NbdClient.connect({ target: { socketPath: qsd.nbdSocket }, exportName: 'rw', metaContexts: ['qemu:dirty-bitmap:missing'] }),
      (err) => assertCode('NBD_PROTOCOL')(err) && /qemu:dirty-bitmap:missing/.test((err as Error).message),
    );
  });
});

describe('NBD client against qemu-nbd (TCP) and our own server', () => {
  const tmp = makeTempDir('nbd-client');
  let imagePath: string;
  let source: FileBlockSource;
  let server: NbdServer;
  let qemuNbdPort: number;

  before(async () => {
    imagePath = await writeTestImage(tmp.path);
    source = await FileBlockSource.open(imagePath);
    server = await startNbdServer({ exports: { disk: source } });
    qemuNbdPort = await freePort();
    // A second sparse image of its own (a file copy may allocate the holes).
    await mkdir(join(tmp.path, 'qn'));
    const copy = await writeTestImage(join(tmp.path, 'qn'));
    await run(qemuTools().qemuNbd, ['-t', '-r', '-f', 'raw', '-b', '127.0.0.1', '-p', String(qemuNbdPort), '-x', 'd', '--pid-file', join(tmp.path, 'qn.pid'), '--fork', copy]);
  });

  after(async () => {
    await server?.close();
    await source?.close();
    try {
      const { readFileSync } = await import('node:fs');
      process.kill(Number(readFileSync(join(tmp.path, 'qn.pid'), 'utf8').trim()), 'SIGTERM');
    } catch {
      // qemu-nbd did not start; before() already failed the suite.
    }
    tmp.cleanup();
  });

  for (const which of ['qemu-nbd', 'lifeboat'] as const) {
    it(`${which}: reads the image byte for byte, with zero extents from base:allocation`, async () => {
      const client =
        which === 'qemu-nbd'
          ? await NbdClient.connect({ target: { host: '127.0.0.1', port: qemuNbdPort }, exportName: 'd', metaContexts: ['base:allocation'] })
          : await NbdClient.connect({ target: { host: '127.0.0.1', port: (server.address as { port: number }).port }, exportName: 'disk', metaContexts: ['base:allocation'] });
      const expected = expectedImage();
      try {
        assert.equal(client.sizeBytes, IMAGE_SIZE);
        const data = await client.read(0, IMAGE_SIZE);
        assert.ok(data.equals(expected), 'whole-image read differs');
        const src = nbdBlockSource(client);
        const extents = await src.extents(0, IMAGE_SIZE);
        assert.equal(extents.reduce((n, e) => n + e.length, 0), IMAGE_SIZE);
        for (const e of extents) {
          if (e.zero) assert.ok(expected.subarray(e.offset, e.offset + e.length).every((b) => b === 0), `zero extent at ${e.offset} is not zero`);
        }
        assert.ok(extents.some((e) => e.zero && e.length >= MiB), 'holes are reported');
        const status = await client.blockStatus('base:allocation', 2 * MiB, 4096, { one: true });
        assert.equal(status.length, 1);
        assert.ok(status[0] !== undefined && status[0].flags & NBD_STATE_ZERO);
      } finally {
        await client.close();
      }
    });
  }

  it('refuses to write to a read-only export before sending anything', async () => {
    const client = await NbdClient.connect({ target: { host: '127.0.0.1', port: (server.address as { port: number }).port }, exportName: 'disk' });
    try {
      assert.equal(client.info.readOnly, true);
      await assert.rejects(client.write(0, Buffer.alloc(4096, 1)), assertCode('USAGE'));
      assert.ok((await client.read(0, 4096)).every((b) => b === 0xab), 'the connection is still usable');
    } finally {
      await client.close();
    }
  });

  it('close() says goodbye: our server sees the connection end', async () => {
    const client = await NbdClient.connect({ target: { host: '127.0.0.1', port: (server.address as { port: number }).port }, exportName: 'disk' });
    assert.equal(server.stats().activeConnections, 1);
    await client.close();
    await client.close();
    for (let i = 0; i < 100 && server.stats().activeConnections > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(server.stats().activeConnections, 0);
    assert.equal(server.stats().protocolErrors, 0);
    await assert.rejects(client.read(0, 4096), assertCode('NBD_PROTOCOL'));
  });
});

/** A fake server that negotiates a 1 MiB export, then lets `onRequest` answer (or not). */
async function fakeServer(onRequest: (socket: Socket, header: Buffer) => void): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(NBD_MAGIC, 0);
    greeting.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
    greeting.writeUInt16BE(3, 16);
    socket.write(greeting);
    let buf = Buffer.alloc(0);
    let negotiated = false;
    let flagsRead = false;
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!flagsRead && buf.length >= 4) {
        buf = buf.subarray(4);
        flagsRead = true;
      }
      while (flagsRead && !negotiated && buf.length >= 16) {
        const opt = buf.readUInt32BE(8);
        const len = buf.readUInt32BE(12);
        if (buf.length < 16 + len) return;
        buf = buf.subarray(16 + len);
        const reply = (type: number, data: Buffer): void => {
          const h = Buffer.alloc(20);
          h.writeBigUInt64BE(NBD_REP_MAGIC, 0);
          h.writeUInt32BE(opt, 8);
          h.writeUInt32BE(type, 12);
          h.writeUInt32BE(data.length, 16);
          socket.write(Buffer.concat([h, data]));
        };
        if (opt === 7) {
          const info = Buffer.alloc(12);
          info.writeUInt16BE(0, 0);
          info.writeBigUInt64BE(BigInt(MiB), 2);
          info.writeUInt16BE(1, 10);
          reply(NBD_REP_INFO, info);
          negotiated = true;
        }
        reply(NBD_REP_ACK, Buffer.alloc(0));
      }
      while (negotiated && buf.length >= 28) {
        onRequest(socket, buf.subarray(0, 28));
        buf = buf.subarray(28);
      }
    });
    socket.on('error', () => {});
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  return { server, port };
}

describe('NBD client against misbehaving servers', () => {
  it('a request without an answer ends in NBD_PROTOCOL within the timeout', async () => {
    const { server, port } = await fakeServer(() => {});
    try {
      const client = await NbdClient.connect({ target: { host: '127.0.0.1', port }, exportName: 'x', timeoutMs: 300 });
      const started = Date.now();
      await assert.rejects(client.read(0, 4096), (err) => assertCode('NBD_PROTOCOL')(err) && /did not answer/.test((err as Error).message));
      assert.ok(Date.now() - started < 2000);
      await client.close();
    } finally {
      server.close();
    }
  });

  it('a reply with a bad magic or an unknown cookie ends in NBD_PROTOCOL', async () => {
    for (const bad of ['magic', 'cookie'] as const) {
      const { server, port } = await fakeServer((socket, header) => {
        const r = Buffer.alloc(16);
        r.writeUInt32BE(bad === 'magic' ? 0xdeadbeef : 0x67446698, 0);
        r.writeBigUInt64BE(header.readBigUInt64BE(8) + 1000n, 8);
        socket.write(r);
      });
      try {
        const client = await NbdClient.connect({ target: { host: '127.0.0.1', port }, exportName: 'x', timeoutMs: 5000 });
        await assert.rejects(client.read(0, 4096), assertCode('NBD_PROTOCOL'));
        await client.close();
      } finally {
        server.close();
      }
    }
  });

  it('a server that is not NBD fails negotiation with NBD_PROTOCOL; nothing listening is NBD_PROTOCOL too', async () => {
    const server = createServer((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n0123456789'));
    const port = await freePort();
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
    try {
      await assert.rejects(NbdClient.connect({ target: { host: '127.0.0.1', port }, exportName: 'x', timeoutMs: 2000 }), assertCode('NBD_PROTOCOL'));
    } finally {
      server.close();
    }
    await assert.rejects(NbdClient.connect({ target: { socketPath: '/nonexistent/nbd.sock' }, exportName: 'x' }), assertCode('NBD_PROTOCOL'));
  });
});
