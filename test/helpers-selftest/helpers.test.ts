import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { makeTempDir, requireTool } from '../helpers/env.js';
import { startFio, supportsDirectIo } from '../helpers/fio.js';
import { createLink, type NetnsLink } from '../helpers/netns.js';
import { AZURITE_ACCOUNT, AZURITE_KEY, startRestartableAzurite } from '../helpers/services.js';
import { RECORD_BYTES, RecordWriter, recordBlock, slotOf, verifyImage, type RecordLayout } from '../helpers/workload.js';

const temp = makeTempDir('helpers-selftest');
after(() => temp.cleanup());

describe('netns: a link between two namespaces', () => {
  let link: NetnsLink;
  let server: ChildProcess;
  const PORT = 7000;

  // One-shot echo client, run inside namespace a: prints the echo, or exits 1 with what went wrong.
  const CLIENT = `
    const [host, port, text] = process.argv.slice(1);
    const s = require('node:net').connect({ host, port: Number(port) });
    const timer = setTimeout(() => { console.log('timeout'); process.exit(1); }, 1500);
    s.on('connect', () => s.write(text + '\\n'));
    s.on('data', (d) => { clearTimeout(timer); process.stdout.write(String(d)); s.destroy(); });
    s.on('error', (e) => { clearTimeout(timer); console.log(e.code); process.exit(1); });`;
  const echoFromA = async (text: string): Promise<string> =>
    (await link.exec('a', process.execPath, ['-e', CLIENT, link.b.ip, String(PORT), text])).stdout.trim();

  before(async () => {
    link = await createLink();
    server = link.spawn('b', process.execPath, [
      '-e',
      `require('node:net').createServer((s) => s.pipe(s)).listen(${PORT}, process.argv[1], () => console.log('listening'))`,
      link.b.ip,
    ]);
    await new Promise<void>((resolve, reject) => {
      server.stdout?.once('data', () => resolve());
      server.once('exit', (code) => reject(new Error(`echo server in ${link.b.name} exited with ${code}`)));
    });
  });
  after(async () => {
    await link?.destroy();
  });

  it('gives each end a unique namespace and an address', () => {
    assert.match(link.a.name, new RegExp(`^lb-${process.pid}-\\d+-a$`));
    assert.match(link.b.name, new RegExp(`^lb-${process.pid}-\\d+-b$`));
    assert.notEqual(link.a.ip, link.b.ip);
  });

  it('carries TCP from a to b, drops it while the link is down, and carries it again when up', async () => {
    assert.equal(await echoFromA('hello'), 'hello');

    await link.setLinkDown();
    // A cut cable: the connection attempt goes unanswered. ECONNREFUSED would mean
    // something local answered instead of b.
    const failure = await echoFromA('lost').then(
      (out) => assert.fail(`echo still worked with the link down: ${out}`),
      (err: Error) => err.message,
    );
    assert.match(failure, /timeout|EHOSTUNREACH/);

    await link.setLinkUp();
    assert.equal(await echoFromA('back'), 'back');
  });

  it('keeps an established connection through a cut: data sent during it arrives after', async () => {
    const client = link.spawn('a', process.execPath, [
      '-e',
      `const s = require('node:net').connect({ host: process.argv[1], port: ${PORT} });
       s.on('connect', () => console.log('connected'));
       s.on('data', (d) => process.stdout.write(String(d)));
       process.stdin.on('data', (d) => s.write(d));`,
      link.b.ip,
    ]);
    let output = '';
    client.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const waitFor = async (text: string, ms: number): Promise<boolean> => {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        if (output.includes(text)) return true;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return output.includes(text);
    };
    try {
      assert.ok(await waitFor('connected', 5000), `client did not connect: ${output}`);
      client.stdin?.write('one\n');
      assert.ok(await waitFor('one', 3000), 'no echo before the cut');
      await link.setLinkDown();
      client.stdin?.write('two\n');
      assert.equal(await waitFor('two', 1500), false, 'data crossed a link that is down');
      await link.setLinkUp();
      // TCP retransmits on its own backoff schedule (first after about 200 ms, then doubling).
      assert.ok(await waitFor('two', 15_000), `data sent during the cut never arrived: ${JSON.stringify(output)}`);
    } finally {
      client.kill('SIGKILL');
    }
  });

  it('destroy removes the namespaces and kills what runs in them', async () => {
    const extra = await createLink();
    const sleeper = extra.spawn('b', 'sleep', ['600']);
    const exited = new Promise((resolve) => sleeper.once('exit', resolve));
    await extra.destroy();
    await exited;
    const names = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
    for (const name of [extra.a.name, extra.b.name]) assert.ok(!names.includes(name), `${name} still exists`);
    await extra.destroy(); // idempotent
  });
});

describe('fio: a rate-limited random-write load', () => {
  it('writes into a file for a fixed time and reports bytes, iops and latency', async () => {
    const file = join(temp.path, 'fio-target.img');
    const direct = supportsDirectIo(temp.path);
    const run = startFio({
      target: { file, sizeBytes: 64 * 1024 * 1024 },
      rateMBPerSec: 20,
      durationMs: 1000,
      fsyncEveryWrites: 8,
      direct,
      seed: 7,
    });
    const result = await run.done;
    assert.ok(result.bytesWritten > 0, 'fio wrote nothing');
    assert.ok(result.writes > 0);
    assert.ok(result.bytesWritten % 4096 === 0, `${result.bytesWritten} bytes is not a whole number of 4 KiB blocks`);
    assert.ok(Number.isFinite(result.writeLatencyUs.p50) && result.writeLatencyUs.p50 > 0);
    assert.ok(result.syncLatencyUs, 'fsync every 8 writes, but no sync latency reported');
    assert.ok(statSync(file).size > 0);
  });

  it('runs until stop() and still reports what it wrote', async () => {
    const run = startFio({ target: { file: join(temp.path, 'fio-stop.img'), sizeBytes: 16 * 1024 * 1024 }, rateMBPerSec: 10, fdatasyncEveryWrites: 4 });
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const result = await run.stop();
    assert.ok(result.bytesWritten > 0);
    assert.equal(run.child.exitCode !== null || run.child.signalCode !== null, true);
  });

  it('writes into an NBD export', async () => {
    const nbdkit = requireTool('nbdkit', 'nbdkit');
    const socket = join(temp.path, 'nbd.sock');
    const server = spawn(nbdkit, ['-f', '-U', socket, '--exit-with-parent', 'memory', '64M'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      const result = await startFio({ target: { nbdUri: `nbd+unix:///?socket=${socket}` }, rateMBPerSec: 20, durationMs: 500, ioDepth: 4, fsyncEveryWrites: 16 }).done;
      assert.ok(result.bytesWritten > 0);
    } finally {
      server.kill('SIGTERM');
    }
  });
});

describe('workload: acknowledged-write records', () => {
  const layout: RecordLayout = { seed: 42, slotCount: 1024, offsetBytes: 8192 };

  /** A writer into an in-memory image, with a clock that ticks 10 ms per reading. */
  function memoryWriter(image: Buffer): RecordWriter {
    let clock = 1_000_000;
    return new RecordWriter(
      async (offset, block) => {
        block.copy(image, offset);
      },
      { ...layout, now: () => (clock += 10) },
    );
  }
  const imageBytes = layout.offsetBytes + layout.slotCount * RECORD_BYTES;

  it('passes a consistent file image written with O_DSYNC', async () => {
    const path = join(temp.path, 'records.img');
    const writer = await RecordWriter.openFile(path, { seed: 9, slotCount: 64 });
    assert.equal(await writer.run({ count: 300 }), 300);
    await writer.close();
    const acked = writer.acked;
    assert.equal(acked.records.length, 300);
    assert.deepEqual(acked.records.map((r) => r.record), Array.from({ length: 300 }, (_, i) => i + 1));
    const report = await verifyImage(path, acked);
    assert.equal(report.prefix, 300);
    // 300 records over 64 slots: slots are overwritten, and the check still finds the prefix.
    assert.ok(report.slotsWithRecords <= 64);
    assert.equal((await verifyImage(readFileSync(path), acked)).prefix, 300);
  });

  it('fails when a record in the middle of the prefix is missing', async () => {
    const image = Buffer.alloc(imageBytes);
    const writer = memoryWriter(image);
    await writer.run({ count: 300 });
    await verifyImage(image, writer.acked);
    // Record 150 with no later record in its slot: put back what the slot held before it.
    const victim = [...Array(150).keys()].map((i) => 150 + i).find((r) => !writer.acked.records.some((a) => a.record > r && a.slot === slotOf(layout, r)));
    assert.ok(victim);
    const slot = slotOf(layout, victim);
    const earlier = writer.acked.records.filter((a) => a.slot === slot && a.record < victim).at(-1);
    const broken = Buffer.from(image);
    (earlier ? recordBlock(layout, earlier.record) : Buffer.alloc(RECORD_BYTES)).copy(broken, layout.offsetBytes + slot * RECORD_BYTES);
    await assert.rejects(verifyImage(broken, writer.acked), (err: Error) => {
      assert.match(err.message, /not a prefix of the writes/);
      assert.match(err.message, new RegExp(`slot ${slot} @ \\d+: expected record ${victim} `));
      return true;
    });
  });

  it('fails on a torn block', async () => {
    const image = Buffer.alloc(imageBytes);
    const writer = memoryWriter(image);
    await writer.run({ count: 100 });
    const slot = slotOf(layout, 40);
    const torn = Buffer.from(image);
    torn.fill(0, layout.offsetBytes + slot * RECORD_BYTES + 2048, layout.offsetBytes + (slot + 1) * RECORD_BYTES);
    await assert.rejects(verifyImage(torn, writer.acked), /1 torn or corrupt block\(s\):\n {4}slot \d+ @ \d+: record \d+ header but checksum mismatch/);
  });

  it('accepts a shorter prefix only for writes acknowledged after upToTime', async () => {
    const image = Buffer.alloc(imageBytes);
    const writer = memoryWriter(image);
    await writer.run({ count: 150 });
    const replica = Buffer.from(image); // the replica stopped here
    await writer.run({ count: 50 });
    const acked = writer.acked;
    const ackOf = (n: number): number => acked.records[n - 1]?.ackedAtMs ?? assert.fail(`no record ${n}`);

    const report = await verifyImage(replica, acked, { upToTime: ackOf(151) });
    assert.equal(report.prefix, 150);
    await assert.rejects(verifyImage(replica, acked, { upToTime: ackOf(161) }), /10 acknowledged record\(s\) missing, records 151\.\.160/);
    await assert.rejects(verifyImage(replica, acked), /50 acknowledged record\(s\) missing/);
  });

  it('accepts the in-flight record on disk although it was never acknowledged', async () => {
    const image = Buffer.alloc(imageBytes);
    let fail = false;
    const writer = new RecordWriter(
      async (offset, block) => {
        block.copy(image, offset);
        if (fail) throw new Error('power cut after the write reached the disk');
      },
      layout,
    );
    await writer.run({ count: 20 });
    fail = true;
    await assert.rejects(writer.writeNext(), /power cut/);
    assert.equal(writer.inFlight?.record, 21);
    assert.equal((await verifyImage(image, writer.acked)).prefix, 21);
  });
});

describe('services: Azurite outage and recovery', () => {
  it('keeps a blob across halt() and resume() on the same port and data directory', async () => {
    const azurite = await startRestartableAzurite();
    try {
      const client = () =>
        new BlobServiceClient(azurite.endpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY), {
          retryOptions: { maxTries: 1 },
        }).getContainerClient('outage');
      await client().create();
      await client().getBlockBlobClient('kept').upload('survives the outage', 19);

      await azurite.halt();
      assert.equal(azurite.running, false);
      await assert.rejects(client().getBlockBlobClient('kept').downloadToBuffer(), /ECONNREFUSED/);

      await azurite.resume();
      assert.equal(azurite.running, true);
      assert.equal((await client().getBlockBlobClient('kept').downloadToBuffer()).toString(), 'survives the outage');
    } finally {
      await azurite.stop();
    }
    assert.equal(existsSync(azurite.dataDir), false);
  });
});
