/**
 * Black-box tests through QEMU's own NBD client: what `qemu-img` and `qemu-io`
 * see must be byte-for-byte the source image, and writes must be refused.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startNbdServer } from '../../src/nbd/server.js';
import type { NbdServer } from '../../src/nbd/server.js';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { FileBlockSource, IMAGE_RUNS, IMAGE_SIZE, run, runExpectingFailure, writeTestImage } from './fixtures.js';

describe('NBD server with qemu clients', () => {
  const qemuImg = requireTool('qemu-img', 'qemu-utils');
  const qemuIo = requireTool('qemu-io', 'qemu-utils');
  const tmp = makeTempDir('nbd-qemu');
  let imagePath: string;
  let source: FileBlockSource;
  let server: NbdServer;

  before(async () => {
    imagePath = await writeTestImage(tmp.path);
    source = await FileBlockSource.open(imagePath);
    server = await startNbdServer({ exports: { disk: source } });
  });

  after(async () => {
    await server.close();
    await source.close();
    tmp.cleanup();
  });

  it('qemu-img info reports the virtual size', async () => {
    const info = JSON.parse(await run(qemuImg, ['info', '--output=json', server.uri('disk')])) as { 'virtual-size': number };
    assert.equal(info['virtual-size'], IMAGE_SIZE);
  });

  it('qemu-img convert copies the image byte for byte', async () => {
    const out = join(tmp.path, 'qemu-copy.raw');
    await run(qemuImg, ['convert', '-f', 'raw', '-O', 'raw', server.uri('disk'), out]);
    assert.ok((await readFile(out)).equals(await readFile(imagePath)), 'copy differs from the source image');
  });

  it('qemu-io reads the known patterns, zeros in holes, and the unaligned tail', async () => {
    const commands = [
      'read -P 0xab 0 1M',
      'read -P 0 1M 7M',
      'read -P 0xcd 8M 64k',
      'read -P 0 8256k 4k',
      `read -P 0xef ${IMAGE_SIZE - 1536} 1536`,
      `read -P 0 ${IMAGE_SIZE - 4096} 2560`,
      'read -P 0xab 1000 3',
    ];
    const out = await run(qemuIo, ['-r', '-f', 'raw', ...commands.flatMap((c) => ['-c', c]), server.uri('disk')]);
    assert.doesNotMatch(out, /Pattern verification failed|failed/i, out);
    assert.equal(out.match(/^read \d+\/\d+ bytes/gm)?.length, commands.length, out);
  });

  it('qemu-io detects a wrong pattern (the check above can fail)', async () => {
    const out = await runExpectingFailure(qemuIo, ['-r', '-f', 'raw', '-c', 'read -P 0x11 0 4k', server.uri('disk')]);
    assert.match(out, /Pattern verification failed/);
  });

  it('refuses writes: qemu cannot open the export read-write', async () => {
    const out = await runExpectingFailure(qemuIo, ['-f', 'raw', '-c', 'write -P 0x11 0 4k', server.uri('disk')]);
    assert.match(out, /read.only|Permission denied|Operation not permitted/i, out);
    const first = await source.read(0, 4096);
    assert.ok(first.every((b) => b === 0xab), 'source changed');
  });

  it('serves the data runs the fixture declares (sanity of the fixture itself)', async () => {
    for (const runSpec of IMAGE_RUNS) {
      const data = await source.read(runSpec.offset, runSpec.length);
      if (runSpec.fill !== 'random') assert.ok(data.every((b) => b === runSpec.fill));
    }
  });
});
