/**
 * Hostile and broken clients: garbage, truncated handshakes, absurd lengths,
 * silent clients. The server must drop only the offending connection, keep
 * counting, and serve a good client afterwards; close() must end everything.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { NBD_CMD_READ, NBD_CMD_WRITE, NBD_OPT_GO, NBD_OPTS_MAGIC, NBD_REQUEST_MAGIC } from '../../src/nbd/protocol.js';
import { startNbdServer } from '../../src/nbd/server.js';
import type { NbdServer, NbdServerOptions } from '../../src/nbd/server.js';
import { MemoryBlockSource } from './fixtures.js';
import { RawNbdClient, goPayload } from './raw-client.js';
import type { ReplyMessage } from './raw-client.js';

const data = Buffer.alloc(1 << 20, 0x42);
let server: NbdServer | null = null;
const clients: RawNbdClient[] = [];

async function start(options: Partial<NbdServerOptions> = {}): Promise<NbdServer> {
  server = await startNbdServer({ exports: { disk: new MemoryBlockSource(data) }, ...options });
  return server;
}

async function connect(s: NbdServer): Promise<RawNbdClient> {
  if (s.address.kind !== 'tcp') throw new Error('tcp expected');
  const c = await RawNbdClient.connect({ port: s.address.port });
  clients.push(c);
  return c;
}

/** Resolves true if the server closed the connection within `ms`. */
async function closedWithin(c: RawNbdClient, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const result = await Promise.race([c.closed.then(() => true), timeout]);
  clearTimeout(timer);
  return result;
}

/** A good client still gets correct data. */
async function assertServes(s: NbdServer): Promise<void> {
  const c = await connect(s);
  await c.handshake('disk', { structured: true });
  c.request(NBD_CMD_READ, 1n, 512, 512);
  const reply: ReplyMessage = await c.reply();
  assert.equal(reply.kind, 'chunk');
  assert.ok(reply.kind === 'chunk' && reply.payload.subarray(8).equals(data.subarray(512, 1024)));
  c.disconnect();
  await c.closed;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = null;
});

function optionHeader(option: number, length: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(length >>> 0, 12);
  return h;
}

describe('NBD server robustness', () => {
  it('drops clients that send garbage, bad flags, bad magics or absurd lengths, and keeps serving', async () => {
    const s = await start();
    const cases: Array<{ name: string; send: (c: RawNbdClient) => Promise<void> }> = [
      { name: 'garbage before the greeting is read', send: async (c) => c.write(Buffer.from('GET / HTTP/1.1\r\n\r\n')) },
      {
        name: 'unknown client flags',
        send: async (c) => {
          await c.greeting();
          c.sendClientFlags(0xffffffff);
        },
      },
      {
        name: 'client without fixed newstyle',
        send: async (c) => {
          await c.greeting();
          c.sendClientFlags(0);
        },
      },
      {
        name: 'bad option magic',
        send: async (c) => {
          await c.greeting();
          c.sendClientFlags();
          c.write(Buffer.alloc(16, 0x41));
        },
      },
      {
        name: 'option length of 4 GiB',
        send: async (c) => {
          await c.greeting();
          c.sendClientFlags();
          c.write(optionHeader(NBD_OPT_GO, 0xffffffff));
        },
      },
      {
        name: 'unknown export in NBD_OPT_EXPORT_NAME',
        send: async (c) => {
          await c.greeting();
          c.sendClientFlags();
          c.sendOption(1, Buffer.from('nope'));
        },
      },
      {
        name: 'bad request magic',
        send: async (c) => {
          await c.handshake('disk');
          c.write(Buffer.alloc(28, 0xee));
        },
      },
      {
        name: 'write with a 2 GiB payload',
        send: async (c) => {
          await c.handshake('disk');
          c.request(NBD_CMD_WRITE, 1n, 0, 0x7fffffff);
        },
      },
    ];
    for (const { name, send } of cases) {
      const c = await connect(s);
      await send(c);
      assert.ok(await closedWithin(c, 2000), `server did not close the connection: ${name}`);
    }
    assert.ok(s.stats().protocolErrors >= cases.length - 1, JSON.stringify(s.stats()));
    await assertServes(s);
  });

  it('survives truncated handshakes and requests cut in half', async () => {
    const s = await start();
    const cuts: Array<(c: RawNbdClient) => Promise<void>> = [
      async (c) => c.write(Buffer.from([0, 0])),
      async (c) => {
        await c.greeting();
        c.sendClientFlags();
        c.write(optionHeader(NBD_OPT_GO, 100).subarray(0, 9));
      },
      async (c) => {
        await c.greeting();
        c.sendClientFlags();
        c.write(Buffer.concat([optionHeader(NBD_OPT_GO, 100), goPayload('disk').subarray(0, 5)]));
      },
      async (c) => {
        await c.handshake('disk');
        const h = Buffer.alloc(28);
        h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
        c.write(h.subarray(0, 17));
      },
      async (c) => {
        await c.handshake('disk');
        c.request(NBD_CMD_WRITE, 1n, 0, 65536, 0, Buffer.alloc(1000));
      },
    ];
    for (const cut of cuts) {
      const c = await connect(s);
      await cut(c);
      c.socket.end();
      assert.ok(await closedWithin(c, 2000));
    }
    await assertServes(s);
    await waitFor(() => s.stats().activeConnections === 0);
  });

  it('survives a seeded fuzz run of random bytes after valid prefixes', async () => {
    const s = await start({ handshakeTimeoutMs: 2000 });
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 60; i++) {
      const c = await connect(s);
      const stage = rand(3);
      if (stage >= 1) {
        await c.greeting();
        c.sendClientFlags();
      }
      if (stage === 2) {
        c.sendOption(NBD_OPT_GO, goPayload('disk'));
        await c.optionReplies();
      }
      const junk = Buffer.alloc(1 + rand(200));
      for (let j = 0; j < junk.length; j++) junk[j] = rand(256);
      c.write(junk);
      c.socket.end();
      assert.ok(await closedWithin(c, 5000), `fuzz case ${i} (stage ${stage}) left the connection open`);
    }
    await assertServes(s);
  });

  it('closes clients that stay silent past the handshake deadline', async () => {
    const s = await start({ handshakeTimeoutMs: 200 });
    const c = await connect(s);
    assert.ok(await closedWithin(c, 3000));
    await assertServes(s);
  });

  it('counts connections and close() ends all of them, waiting for running reads', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let readsSettled = 0;
    let readStarted = false;
    const source = new MemoryBlockSource(data, {
      beforeRead: async (offset) => {
        readStarted = true;
        if (offset === 4096) await gate;
        readsSettled++;
      },
    });
    const s = await start({ exports: { disk: source } });
    const idle = await connect(s);
    await idle.greeting();
    const transmitting = await connect(s);
    await transmitting.handshake('disk');
    const busy = await connect(s);
    await busy.handshake('disk');
    busy.request(NBD_CMD_READ, 9n, 4096, 4096);
    await waitFor(() => s.stats().activeConnections === 3 && readStarted);
    assert.equal(s.stats().totalConnections, 3);

    let closed = false;
    const closing = s.close().then(() => (closed = true));
    assert.ok(await closedWithin(idle, 2000));
    assert.ok(await closedWithin(transmitting, 2000));
    assert.ok(await closedWithin(busy, 2000));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(closed, false, 'close() resolved while a read was still running against the source');
    release();
    await closing;
    assert.equal(readsSettled, 1);
    assert.equal(s.stats().activeConnections, 0);
    await assert.rejects(connect(s));
    server = null;
  });
});

async function waitFor(condition: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
