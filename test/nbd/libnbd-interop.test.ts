/**
 * Black-box tests through libnbd's tools: nbdinfo (metadata, base:allocation map,
 * export list), nbdcopy, unix sockets, and several clients at once.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startNbdServer } from '../../src/nbd/server.js';
import type { NbdServer } from '../../src/nbd/server.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { FileBlockSource, IMAGE_SIZE, MemoryBlockSource, expectedImage, run, runExpectingFailure, writeTestImage } from './fixtures.js';

interface MapEntry {
  offset: number;
  length: number;
  type: number;
  description: string;
}

describe('NBD server with libnbd clients', () => {
  const nbdinfo = requireTool('nbdinfo', 'libnbd-bin');
  const nbdcopy = requireTool('nbdcopy', 'libnbd-bin');
  const qemuImg = requireTool('qemu-img', 'qemu-utils');
  const tmp = makeTempDir('nbd-libnbd');
  let source: FileBlockSource;
  let tcp: NbdServer;
  let unix: NbdServer;
  const small = new MemoryBlockSource(Buffer.alloc(8192, 0x5a));

  before(async () => {
    source = await FileBlockSource.open(await writeTestImage(tmp.path));
    tcp = await startNbdServer({ exports: { disk: source, small } });
    unix = await startNbdServer({ exports: new Map([['disk', source]]), listen: { socketPath: join(tmp.path, 'nbd.sock') } });
  });

  after(async () => {
    await tcp.close();
    await unix.close();
    await source.close();
    tmp.cleanup();
  });

  it('nbdinfo --json shows size, read-only, and what we advertise', async () => {
    const info = JSON.parse(await run(nbdinfo, ['--json', tcp.uri('disk')])) as {
      protocol: string;
      structured: boolean;
      exports: Array<Record<string, unknown>>;
    };
    assert.equal(info.protocol, 'newstyle-fixed');
    assert.equal(info.structured, true);
    const exp = info.exports[0];
    assert.ok(exp !== undefined);
    assert.equal(exp['export-size'], IMAGE_SIZE);
    assert.equal(exp['is_read_only'], true);
    assert.equal(exp['can_trim'], false);
    assert.equal(exp['can_zero'], false);
    assert.equal(exp['can_multi_conn'], true);
    assert.equal(exp['block_size_minimum'], 1);
    assert.equal(exp['block_size_preferred'], 4096);
    assert.equal(exp['block_size_maximum'], 32 * 1024 * 1024);
    assert.deepEqual(exp['contexts'], ['base:allocation']);
  });

  it('nbdinfo --map shows the holes from base:allocation', async () => {
    const map = JSON.parse(await run(nbdinfo, ['--map', '--json', tcp.uri('disk')])) as MapEntry[];
    const MiB = 1024 * 1024;
    assert.deepEqual(
      map.map((e) => [e.offset, e.length, e.type]),
      [
        [0, MiB, 0],
        [MiB, 7 * MiB, 3],
        [8 * MiB, 64 * 1024, 0],
        [8 * MiB + 64 * 1024, 12 * MiB - 64 * 1024, 3],
        [20 * MiB, 4 * MiB, 0],
        [24 * MiB, IMAGE_SIZE - 1536 - 24 * MiB, 3],
        [IMAGE_SIZE - 1536, 1536, 0],
      ],
    );
  });

  it('nbdinfo --list lists every export', async () => {
    const out = JSON.parse(await run(nbdinfo, ['--list', '--json', tcp.uri('')])) as { exports: Array<{ 'export-name': string }> };
    assert.deepEqual(out.exports.map((e) => e['export-name']).sort(), ['disk', 'small']);
  });

  it('nbdcopy copies the image byte for byte', async () => {
    const out = join(tmp.path, 'nbdcopy.raw');
    await run(nbdcopy, [tcp.uri('disk'), out]);
    assert.ok((await readFile(out)).equals(expectedImage()));
  });

  it('serves over a unix socket with an nbd+unix URI', async () => {
    assert.match(unix.uri('disk'), /^nbd\+unix:\/\/\/disk\?socket=\//);
    assert.equal((await run(nbdinfo, ['--size', unix.uri('disk')])).trim(), String(IMAGE_SIZE));
    const out = join(tmp.path, 'unix-copy.raw');
    await run(qemuImg, ['convert', '-f', 'raw', '-O', 'raw', unix.uri('disk'), out]);
    assert.ok((await readFile(out)).equals(expectedImage()));
  });

  it('serves several clients at once, each getting the right export', async () => {
    const jobs = [0, 1, 2, 3].map(async (i) => {
      const out = join(tmp.path, `parallel-${i}.raw`);
      if (i % 2 === 0) await run(nbdcopy, ['--connections=2', tcp.uri('disk'), out]);
      else await run(qemuImg, ['convert', '-f', 'raw', '-O', 'raw', tcp.uri('disk'), out]);
      return readFile(out);
    });
    const smallSize = run(nbdinfo, ['--size', tcp.uri('small')]);
    const expected = expectedImage();
    for (const copy of await Promise.all(jobs)) assert.ok(copy.equals(expected));
    assert.equal((await smallSize).trim(), '8192');
    assert.ok(tcp.stats().totalConnections >= 6);
  });

  it('an unknown export is refused with a clear error', async () => {
    const out = await runExpectingFailure(nbdinfo, [tcp.uri('nope')]);
    assert.match(out, /unknown|not found|export/i, out);
  });
});
