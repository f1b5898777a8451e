/**
 * Protocol details a stock client never exercises, checked over a raw socket:
 * option errors, every command's reply, structured chunks, block status,
 * pipelining with out-of-order replies, and source failures.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Extent } from '../../src/core/block-source.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
} from '../../src/nbd/protocol.js';
import type { NbdLogLevel } from '../../src/nbd/server.js';
import { startNbdServer } from '../../src/nbd/server.js';
import type { NbdServer, NbdServerOptions } from '../../src/nbd/server.js';
import { MemoryBlockSource } from './fixtures.js';
import { RawNbdClient, goPayload, metaContextPayload } from './raw-client.js';
import type { ReplyMessage } from './raw-client.js';

const EPERM = 1;
const EIO = 5;
const EINVAL = 22;
const EOVERFLOW = 75;

const pattern = Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 7 + (i >> 8)) & 0xff));

let server: NbdServer | null = null;
const clients: RawNbdClient[] = [];

async function start(options: Partial<NbdServerOptions> = {}): Promise<{ server: NbdServer; client: () => Promise<RawNbdClient> }> {
  const s = await startNbdServer({ exports: { disk: new MemoryBlockSource(pattern) }, ...options });
  server = s;
  const port = s.address.kind === 'tcp' ? s.address.port : 0;
  return {
    server: s,
    client: async () => {
      const c = await RawNbdClient.connect({ port });
      clients.push(c);
      return c;
    },
  };
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = null;
});

function simple(m: ReplyMessage): Extract<ReplyMessage, { kind: 'simple' }> {
  assert.equal(m.kind, 'simple');
  return m as Extract<ReplyMessage, { kind: 'simple' }>;
}
function chunk(m: ReplyMessage): Extract<ReplyMessage, { kind: 'chunk' }> {
  assert.equal(m.kind, 'chunk');
  return m as Extract<ReplyMessage, { kind: 'chunk' }>;
}

describe('NBD negotiation', () => {
  it('greets with fixed newstyle and no-zeroes', async () => {
    const { client } = await start();
    const c = await client();
    assert.equal(await c.greeting(), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  });

  it('answers unknown options, STARTTLS and bad payloads with errors and keeps negotiating', async () => {
    const { client } = await start();
    const c = await client();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(99);
    assert.equal((await c.optionReply()).type, NBD_REP_ERR_UNSUP);
    c.sendOption(NBD_OPT_STARTTLS);
    assert.equal((await c.optionReply()).type, NBD_REP_ERR_UNSUP);
    c.sendOption(NBD_OPT_LIST, Buffer.from('x'));
    assert.equal((await c.optionReply()).type, NBD_REP_ERR_INVALID);
    c.sendOption(NBD_OPT_GO, Buffer.from([0, 0, 0, 9, 1]));
    assert.equal((await c.optionReply()).type, NBD_REP_ERR_INVALID);
    c.sendOption(NBD_OPT_SET_META_CONTEXT, metaContextPayload('disk', ['base:allocation']));
    assert.equal((await c.optionReply()).type, NBD_REP_ERR_INVALID, 'meta contexts need structured replies first');
    c.sendOption(NBD_OPT_GO, goPayload('nope'));
    const unknown = await c.optionReply();
    assert.equal(unknown.type, NBD_REP_ERR_UNKNOWN);
    assert.equal(unknown.option, NBD_OPT_GO);
    c.sendOption(NBD_OPT_GO, goPayload('disk'));
    const replies = await c.optionReplies();
    assert.equal(replies.at(-1)?.type, NBD_REP_ACK);
    c.request(NBD_CMD_READ, 1n, 0, 16);
    assert.ok(simple(await c.reply()).data.equals(pattern.subarray(0, 16)));
  });

  it('lists exports and answers INFO with export, block size and (on request) name', async () => {
    const { client } = await start({ exports: { a: new MemoryBlockSource(pattern), b: new MemoryBlockSource(Buffer.alloc(512)) } });
    const c = await client();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(NBD_OPT_LIST);
    const list = await c.optionReplies();
    assert.deepEqual(
      list.filter((r) => r.type === NBD_REP_SERVER).map((r) => r.data.subarray(4).toString()),
      ['a', 'b'],
    );
    c.sendOption(NBD_OPT_INFO, goPayload('b', [NBD_INFO_NAME]));
    const info = await c.optionReplies();
    const byType = new Map(info.filter((r) => r.type === NBD_REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
    assert.equal(byType.get(0)?.readBigUInt64BE(2), 512n);
    assert.equal(
      byType.get(0)?.readUInt16BE(10),
      NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN,
    );
    const bs = byType.get(3);
    assert.deepEqual([bs?.readUInt32BE(2), bs?.readUInt32BE(6), bs?.readUInt32BE(10)], [1, 4096, 32 * 1024 * 1024]);
    assert.equal(byType.get(1)?.subarray(2).toString(), 'b');
    // With two exports there is no default export.
    c.sendOption(NBD_OPT_GO, goPayload(''));
    assert.equal((await c.optionReply()).type, NBD_REP_ERR_UNKNOWN);
  });

  it('lists and selects base:allocation', async () => {
    const { client } = await start();
    const c = await client();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(NBD_OPT_STRUCTURED_REPLY);
    assert.equal((await c.optionReply()).type, NBD_REP_ACK);
    c.sendOption(NBD_OPT_LIST_META_CONTEXT, metaContextPayload('disk', []));
    const listed = await c.optionReplies();
    assert.deepEqual(listed.map((r) => r.type), [NBD_REP_META_CONTEXT, NBD_REP_ACK]);
    assert.equal(listed[0]?.data.subarray(4).toString(), 'base:allocation');
    c.sendOption(NBD_OPT_SET_META_CONTEXT, metaContextPayload('disk', ['x-other:thing']));
    assert.deepEqual((await c.optionReplies()).map((r) => r.type), [NBD_REP_ACK]);
    c.sendOption(NBD_OPT_SET_META_CONTEXT, metaContextPayload('nope', ['base:allocation']));
    assert.equal((await c.optionReply()).type, NBD_REP_ERR_UNKNOWN);
    c.sendOption(NBD_OPT_SET_META_CONTEXT, metaContextPayload('disk', ['base:allocation']));
    const set = await c.optionReplies();
    assert.deepEqual(set.map((r) => r.type), [NBD_REP_META_CONTEXT, NBD_REP_ACK]);
    assert.equal(set[0]?.data.readUInt32BE(0), 1);
  });

  it('supports NBD_OPT_EXPORT_NAME, the default export, and zero padding without NO_ZEROES', async () => {
    const { client } = await start();
    const c = await client();
    await c.greeting();
    c.sendClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE);
    c.sendOption(NBD_OPT_EXPORT_NAME, Buffer.alloc(0));
    const tail = await c.reader.read(10 + 124);
    assert.equal(tail.readBigUInt64BE(0), BigInt(pattern.length));
    assert.ok(tail.subarray(10).every((b) => b === 0));
    c.request(NBD_CMD_READ, 7n, 100, 50);
    const r = simple(await c.reply());
    assert.equal(r.handle, 7n);
    assert.ok(r.data.equals(pattern.subarray(100, 150)));
  });

  it('acknowledges NBD_OPT_ABORT and closes', async () => {
    const { client } = await start();
    const c = await client();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(NBD_OPT_ABORT);
    assert.equal((await c.optionReply()).type, NBD_REP_ACK);
    await c.closed;
  });
});

describe('NBD transmission with simple replies', () => {
  it('reads, refuses writes, flushes, and rejects bad ranges without dropping the connection', async () => {
    const { client } = await start();
    const c = await client();
    await c.handshake('disk');
    c.request(NBD_CMD_READ, 1n, 4096, 8192);
    assert.ok(simple(await c.reply()).data.equals(pattern.subarray(4096, 12288)));
    c.request(NBD_CMD_WRITE, 2n, 0, 4096, 0, Buffer.alloc(4096, 0x11));
    assert.equal(simple(await c.reply()).error, EPERM);
    c.request(NBD_CMD_TRIM, 3n, 0, 4096);
    assert.equal(simple(await c.reply()).error, EPERM);
    c.request(NBD_CMD_WRITE_ZEROES, 4n, 0, 4096);
    assert.equal(simple(await c.reply()).error, EPERM);
    c.request(NBD_CMD_FLUSH, 5n, 0, 0);
    assert.equal(simple(await c.reply()).error, 0);
    c.request(NBD_CMD_READ, 6n, pattern.length - 10, 11);
    assert.equal(simple(await c.reply()).error, EINVAL);
    c.request(NBD_CMD_READ, 7n, 2n ** 64n - 1n, 1);
    assert.equal(simple(await c.reply()).error, EINVAL);
    c.request(NBD_CMD_READ, 8n, 0, 0);
    assert.equal(simple(await c.reply()).error, EINVAL);
    c.request(NBD_CMD_READ, 9n, 0, 32 * 1024 * 1024 + 1);
    assert.equal(simple(await c.reply()).error, EOVERFLOW);
    c.request(NBD_CMD_BLOCK_STATUS, 10n, 0, 4096);
    assert.equal(simple(await c.reply()).error, EINVAL, 'no meta context selected');
    c.request(42, 11n, 0, 0);
    assert.equal(simple(await c.reply()).error, EINVAL);
    c.request(NBD_CMD_READ, 12n, pattern.length - 10, 10);
    assert.ok(simple(await c.reply()).data.equals(pattern.subarray(pattern.length - 10)));
    c.disconnect();
    await c.closed;
    assert.equal(server?.stats().protocolErrors, 0);
  });

  it('turns a failing source read into EIO, logs it, and keeps serving', async () => {
    const logged: Array<{ level: NbdLogLevel; msg: string; fields: Record<string, unknown> }> = [];
    const flaky = new MemoryBlockSource(pattern, {
      beforeRead: (offset) => {
        if (offset === 65536) throw new Error('disk on fire');
      },
    });
    const { client } = await start({ exports: { disk: flaky }, logger: (level, msg, fields) => logged.push({ level, msg, fields }) });
    const c = await client();
    await c.handshake('disk');
    c.request(NBD_CMD_READ, 1n, 65536, 512);
    assert.equal(simple(await c.reply()).error, EIO);
    c.request(NBD_CMD_READ, 2n, 0, 512);
    assert.ok(simple(await c.reply()).data.equals(pattern.subarray(0, 512)));
    const entry = logged.find((l) => l.msg === 'nbd source read failed');
    assert.equal(entry?.level, 'error');
    assert.equal(entry?.fields['offset'], 65536);
    assert.equal(entry?.fields['err'], 'disk on fire');
  });
});

describe('NBD transmission with structured replies', () => {
  it('answers reads with one final OFFSET_DATA chunk and errors with ERROR chunks', async () => {
    const { client } = await start();
    const c = await client();
    await c.handshake('disk', { structured: true });
    c.request(NBD_CMD_READ, 1n, 1000, 3000);
    const data = chunk(await c.reply());
    assert.equal(data.type, NBD_REPLY_TYPE_OFFSET_DATA);
    assert.equal(data.flags, NBD_REPLY_FLAG_DONE);
    assert.equal(data.payload.readBigUInt64BE(0), 1000n);
    assert.ok(data.payload.subarray(8).equals(pattern.subarray(1000, 4000)));
    c.request(NBD_CMD_READ, 2n, pattern.length, 1);
    const err = chunk(await c.reply());
    assert.equal(err.type, NBD_REPLY_TYPE_ERROR);
    assert.equal(err.flags, NBD_REPLY_FLAG_DONE);
    assert.equal(err.payload.readUInt32BE(0), EINVAL);
    assert.equal(err.payload.readUInt16BE(4), err.payload.length - 6);
  });

  it('answers BLOCK_STATUS from extents: zero extents are hole|zero, REQ_ONE gives one', async () => {
    const extents = async (offset: number, length: number): Promise<Extent[]> => {
      // Zero from 4 KiB to 12 KiB, data elsewhere; reported in 2 KiB pieces to test merging.
      const out: Extent[] = [];
      for (let at = offset; at < offset + length; ) {
        const next = Math.min(offset + length, (Math.floor(at / 2048) + 1) * 2048);
        out.push({ offset: at, length: next - at, zero: at >= 4096 && at < 12288 });
        at = next;
      }
      return out;
    };
    const { client } = await start({ exports: { disk: new MemoryBlockSource(pattern, { extents }) } });
    const c = await client();
    await c.handshake('disk', { structured: true, baseAllocation: true });
    c.request(NBD_CMD_BLOCK_STATUS, 1n, 1024, 20000);
    const status = chunk(await c.reply());
    assert.equal(status.type, NBD_REPLY_TYPE_BLOCK_STATUS);
    assert.equal(status.flags, NBD_REPLY_FLAG_DONE);
    assert.equal(status.payload.readUInt32BE(0), 1);
    const descriptors = [];
    for (let i = 4; i < status.payload.length; i += 8) {
      descriptors.push([status.payload.readUInt32BE(i), status.payload.readUInt32BE(i + 4)]);
    }
    assert.deepEqual(descriptors, [
      [3072, 0],
      [8192, 3],
      [20000 - 3072 - 8192, 0],
    ]);
    c.request(NBD_CMD_BLOCK_STATUS, 2n, 4096, 20000, NBD_CMD_FLAG_REQ_ONE);
    const one = chunk(await c.reply());
    assert.equal(one.payload.length, 12);
    assert.deepEqual([one.payload.readUInt32BE(4), one.payload.readUInt32BE(8)], [8192, 3]);
    c.request(NBD_CMD_BLOCK_STATUS, 3n, pattern.length - 1, 2);
    assert.equal(chunk(await c.reply()).payload.readUInt32BE(0), EINVAL);
  });

  it('turns extents that break the contract into EIO', async () => {
    const bad = new MemoryBlockSource(pattern, { extents: async (offset) => [{ offset: offset + 1, length: 10, zero: false }] });
    const { client } = await start({ exports: { disk: bad } });
    const c = await client();
    await c.handshake('disk', { structured: true, baseAllocation: true });
    c.request(NBD_CMD_BLOCK_STATUS, 1n, 0, 4096);
    const err = chunk(await c.reply());
    assert.equal(err.type, NBD_REPLY_TYPE_ERROR);
    assert.equal(err.payload.readUInt32BE(0), EIO);
  });
});

describe('NBD pipelining', () => {
  it('processes requests concurrently and replies out of order, matched by handle', async () => {
    let releaseSlow: () => void = () => {};
    const slowGate = new Promise<void>((resolve) => (releaseSlow = resolve));
    const source = new MemoryBlockSource(pattern, { beforeRead: (offset) => (offset === 0 ? slowGate : undefined) });
    const { client } = await start({ exports: { disk: source } });
    const c = await client();
    await c.handshake('disk');
    c.request(NBD_CMD_READ, 100n, 0, 4096);
    c.request(NBD_CMD_READ, 200n, 8192, 4096);
    const first = simple(await c.reply());
    assert.equal(first.handle, 200n);
    assert.ok(first.data.equals(pattern.subarray(8192, 12288)));
    releaseSlow();
    const second = simple(await c.reply());
    assert.equal(second.handle, 100n);
    assert.ok(second.data.equals(pattern.subarray(0, 4096)));
  });

  it('keeps at most maxInflightRequests requests running per connection', async () => {
    let running = 0;
    let peak = 0;
    const gates: Array<() => void> = [];
    const source = new MemoryBlockSource(pattern, {
      beforeRead: async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((resolve) => gates.push(resolve));
        running--;
      },
    });
    const { client } = await start({ exports: { disk: source }, maxInflightRequests: 3 });
    const c = await client();
    await c.handshake('disk');
    for (let i = 0; i < 10; i++) c.request(NBD_CMD_READ, BigInt(i), i * 4096, 4096);
    const seen = new Set<bigint>();
    while (seen.size < 10) {
      while (gates.length === 0) await new Promise((r) => setTimeout(r, 5));
      assert.ok(running <= 3);
      gates.shift()?.();
      const r = simple(await c.reply());
      assert.ok(r.data.equals(pattern.subarray(Number(r.handle) * 4096, Number(r.handle) * 4096 + 4096)));
      seen.add(r.handle);
    }
    assert.equal(peak, 3);
  });
});
