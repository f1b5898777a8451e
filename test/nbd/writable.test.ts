/**
 * Writable exports: real clients (qemu-io, qemu-img, nbdcopy, nbdinfo) write
 * through the server and the backing file must hold exactly what they wrote;
 * bad requests get the protocol's errors and leave the data alone.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileBlockTarget } from '../../src/nbd/file-target.js';
import {
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NbdErrno,
} from '../../src/nbd/protocol.js';
import { startNbdServer } from '../../src/nbd/server.js';
import type { NbdServer } from '../../src/nbd/server.js';
import type { WritableBlockTarget } from '../../src/nbd/writable-target.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { MemoryBlockSource, run } from './fixtures.js';
import { RawNbdClient } from './raw-client.js';
import type { ReplyMessage } from './raw-client.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB + 512;

/** The error number of a reply (simple or structured), 0 for success. */
function errnoOf(reply: ReplyMessage): number {
  if (reply.kind === 'simple') return reply.error;
  return reply.type === 0x8001 ? reply.payload.readUInt32BE(0) : 0;
}

describe('NBD server with writable exports', () => {
  const qemuIo = requireTool('qemu-io', 'qemu-utils');
  const qemuImg = requireTool('qemu-img', 'qemu-utils');
  const nbdcopy = requireTool('nbdcopy', 'libnbd-bin');
  const nbdinfo = requireTool('nbdinfo', 'libnbd-bin');
  const tmp = makeTempDir('nbd-writable');
  let imagePath: string;
  let target: FileBlockTarget;
  let server: NbdServer;
  const readOnly = new MemoryBlockSource(Buffer.alloc(64 * 1024, 0x33));

  before(async () => {
    imagePath = join(tmp.path, 'disk.raw');
    await writeFile(imagePath, Buffer.alloc(SIZE));
    target = await FileBlockTarget.open(imagePath);
    server = await startNbdServer({ exports: { disk: target, ro: readOnly } });
  });

  after(async () => {
    await server.close();
    await target.close();
    tmp.cleanup();
  });

  async function client(exportName: string, structured: boolean): Promise<{ c: RawNbdClient; flags: number }> {
    if (server.address.kind !== 'tcp') throw new Error('tcp expected');
    const c = await RawNbdClient.connect({ port: server.address.port });
    const { flags } = await c.handshake(exportName, { structured });
    return { c, flags };
  }

  it('nbdinfo sees a writable export with FUA, zero and trim, and a read-only one beside it', async () => {
    const info = JSON.parse(await run(nbdinfo, ['--json', server.uri('disk')])) as { exports: Array<Record<string, unknown>> };
    const exp = info.exports[0];
    assert.ok(exp !== undefined);
    assert.equal(exp['export-size'], SIZE);
    assert.equal(exp['is_read_only'], false);
    assert.equal(exp['can_flush'], true);
    assert.equal(exp['can_fua'], true);
    assert.equal(exp['can_zero'], true);
    assert.equal(exp['can_trim'], true);
    assert.equal(exp['can_fast_zero'], false);
    const ro = JSON.parse(await run(nbdinfo, ['--json', server.uri('ro')])) as { exports: Array<Record<string, unknown>> };
    assert.equal(ro.exports[0]?.['is_read_only'], true);
  });

  it('qemu-io writes patterns, zeroes and FUA writes; reading back and the file agree', async () => {
    const commands = [
      'write -P 0x11 0 1M',
      'write -f -P 0x22 4M 64k',
      'write -P 0x33 1000 3',
      'write -z 64k 128k',
      `write -P 0x44 ${SIZE - 512} 512`,
      'aio_write -P 0x55 8M 1M',
      'aio_write -P 0x66 10M 1M',
      'aio_flush',
      'flush',
      'read -P 0x11 0 1000',
      'read -P 0x33 1000 3',
      'read -P 0x11 1003 61533',
      'read -P 0 64k 128k',
      'read -P 0x22 4M 64k',
      `read -P 0x44 ${SIZE - 512} 512`,
      'read -P 0x55 8M 1M',
      'read -P 0x66 10M 1M',
    ];
    const out = await run(qemuIo, ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), server.uri('disk')]);
    assert.doesNotMatch(out, /Pattern verification failed|failed|error/i, out);
    const file = await readFile(imagePath);
    const expected = Buffer.alloc(SIZE);
    expected.fill(0x11, 0, MiB);
    expected.fill(0, 64 * 1024, 192 * 1024);
    expected.fill(0x33, 1000, 1003);
    expected.fill(0x22, 4 * MiB, 4 * MiB + 64 * 1024);
    expected.fill(0x44, SIZE - 512, SIZE);
    expected.fill(0x55, 8 * MiB, 9 * MiB);
    expected.fill(0x66, 10 * MiB, 11 * MiB);
    assert.ok(file.equals(expected), 'the backing file differs from what qemu-io wrote');
  });

  it('takes writes up to the 32 MiB maximum block (larger than the socket read buffer)', async () => {
    const out = await run(qemuIo, ['-f', 'raw', '-c', 'write -P 0x77 0 32M', '-c', 'write -P 0x78 512 9M', '-c', 'read -P 0x77 0 512', '-c', 'read -P 0x78 512 9M', '-c', 'read -P 0x77 9437696 24116736', server.uri('disk')]);
    assert.doesNotMatch(out, /Pattern verification failed|failed|error/i, out);
    const file = await readFile(imagePath);
    assert.ok(file.subarray(0, 512).every((b) => b === 0x77) && file.subarray(512, 512 + 9 * MiB).every((b) => b === 0x78));
    assert.ok(file.subarray(512 + 9 * MiB, 32 * MiB).every((b) => b === 0x77));
  });

  it('nbdcopy and qemu-img convert copy an image into the export byte for byte', async () => {
    const src = join(tmp.path, 'random.raw');
    const content = randomBytes(SIZE);
    content.fill(0, 3 * MiB, 7 * MiB); // a zero run, which nbdcopy sends as write-zeroes
    await writeFile(src, content);
    await run(nbdcopy, [src, server.uri('disk')]);
    assert.ok((await readFile(imagePath)).equals(content), 'nbdcopy: backing file differs from the source');

    const second = randomBytes(SIZE);
    await writeFile(src, second);
    await run(qemuImg, ['convert', '-n', '-f', 'raw', '-O', 'raw', src, server.uri('disk')]);
    assert.ok((await readFile(imagePath)).equals(second), 'qemu-img: backing file differs from the source');
    const back = join(tmp.path, 'back.raw');
    await run(nbdcopy, [server.uri('disk'), back]);
    assert.ok((await readFile(back)).equals(second), 'reading the export back gives other bytes');
  });

  it('answers bad writes with ENOSPC, EINVAL, ENOTSUP and EPERM and leaves the data alone', async () => {
    for (const structured of [false, true]) {
      const before = await readFile(imagePath);
      const { c, flags } = await client('disk', structured);
      assert.equal(flags & NBD_FLAG_READ_ONLY, 0);
      assert.notEqual(flags & NBD_FLAG_SEND_FUA, 0);
      assert.notEqual(flags & NBD_FLAG_SEND_WRITE_ZEROES, 0);
      const junk = Buffer.alloc(4096, 0xee);
      c.request(NBD_CMD_WRITE, 1n, SIZE - 2048, 4096, 0, junk);
      assert.equal(errnoOf(await c.reply()), NbdErrno.ENOSPC, 'write across the end');
      c.request(NBD_CMD_WRITE, 2n, 2n ** 63n, 4096, 0, junk);
      assert.equal(errnoOf(await c.reply()), NbdErrno.ENOSPC, 'write far beyond the end');
      c.request(NBD_CMD_WRITE_ZEROES, 3n, SIZE, 512);
      assert.equal(errnoOf(await c.reply()), NbdErrno.ENOSPC, 'zeroes beyond the end');
      c.request(NBD_CMD_WRITE, 4n, 0, 0);
      assert.equal(errnoOf(await c.reply()), NbdErrno.EINVAL, 'empty write');
      c.request(NBD_CMD_WRITE_ZEROES, 5n, 0, 4096, NBD_CMD_FLAG_FAST_ZERO);
      assert.equal(errnoOf(await c.reply()), NbdErrno.ENOTSUP, 'fast zero');
      c.request(NBD_CMD_TRIM, 6n, 0, 8192);
      assert.equal(errnoOf(await c.reply()), 0, 'trim is accepted');
      assert.ok((await readFile(imagePath)).equals(before), 'a refused request changed the backing file');

      // The connection still works after the errors: a FUA write, NO_HOLE zeroes, a flush, a read.
      const good = Buffer.alloc(4096, structured ? 0x5a : 0xa5);
      c.request(NBD_CMD_WRITE, 7n, 12288, 4096, NBD_CMD_FLAG_FUA, good);
      assert.equal(errnoOf(await c.reply()), 0);
      c.request(NBD_CMD_WRITE_ZEROES, 8n, 16384, 1000, NBD_CMD_FLAG_NO_HOLE);
      assert.equal(errnoOf(await c.reply()), 0);
      c.request(NBD_CMD_FLUSH, 9n, 0, 0);
      assert.equal(errnoOf(await c.reply()), 0);
      c.request(NBD_CMD_READ, 10n, 12288, 4096);
      const read = await c.reply();
      const data = read.kind === 'simple' ? read.data : read.payload.subarray(8);
      assert.ok(data.equals(good));
      const after = await readFile(imagePath);
      assert.ok(after.subarray(12288, 16384).equals(good));
      assert.ok(after.subarray(16384, 17384).every((b) => b === 0));
      c.disconnect();
      await c.closed;
    }
  });

  it('refuses writes, zeroes and trims on a read-only export beside a writable one', async () => {
    const { c, flags } = await client('ro', true);
    assert.notEqual(flags & NBD_FLAG_READ_ONLY, 0);
    c.request(NBD_CMD_WRITE, 1n, 0, 4096, 0, Buffer.alloc(4096, 1));
    assert.equal(errnoOf(await c.reply()), NbdErrno.EPERM);
    c.request(NBD_CMD_WRITE_ZEROES, 2n, 0, 4096);
    assert.equal(errnoOf(await c.reply()), NbdErrno.EPERM);
    c.request(NBD_CMD_TRIM, 3n, 0, 4096);
    assert.equal(errnoOf(await c.reply()), NbdErrno.EPERM);
    c.request(NBD_CMD_READ, 4n, 0, 4096);
    const read = await c.reply();
    assert.ok(read.kind === 'chunk' && read.payload.subarray(8).every((b) => b === 0x33));
    c.disconnect();
    await c.closed;
  });

  it('turns a failing target into EIO without closing the connection', async () => {
    const failing: WritableBlockTarget = {
      writable: true,
      sizeBytes: 1 * MiB,
      read: async (_o, l) => Buffer.alloc(l),
      extents: async (offset, length) => [{ offset, length, zero: false }],
      write: async () => {
        throw new Error('disk on fire');
      },
      flush: async () => {
        throw new Error('disk on fire');
      },
      close: async () => {},
    };
    const s = await startNbdServer({ exports: { bad: failing } });
    try {
      if (s.address.kind !== 'tcp') throw new Error('tcp expected');
      const c = await RawNbdClient.connect({ port: s.address.port });
      await c.handshake('bad', { structured: true });
      c.request(NBD_CMD_WRITE, 1n, 0, 512, 0, Buffer.alloc(512, 9));
      assert.equal(errnoOf(await c.reply()), NbdErrno.EIO);
      c.request(NBD_CMD_FLUSH, 2n, 0, 0);
      assert.equal(errnoOf(await c.reply()), NbdErrno.EIO);
      c.request(NBD_CMD_WRITE_ZEROES, 3n, 0, 512);
      assert.equal(errnoOf(await c.reply()), NbdErrno.EIO);
      c.disconnect();
      await c.closed;
    } finally {
      await s.close();
    }
  });
});
