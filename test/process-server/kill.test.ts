import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { seededRandom } from '../../src/storage/wrappers/faults.js';
import type { ReplicationClient } from '../../src/protocol/client.js';
import type { ChildConfig } from './child-server.js';
import { DISK, fsStore, makeSegment, pki, spoolFiles, storedSegments, tempDir, waitFor } from './harness.js';
import { ReplicationClient as Client } from '../../src/protocol/client.js';
import { MACHINE } from './harness.js';

const CHILD = fileURLToPath(new URL('./child-server.ts', import.meta.url));

async function startChild(configPath: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, configPath], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`process server exited (${code}) before listening`)));
  });
  return { child, port };
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

test('kill -9 of the process server at random points loses nothing acknowledged', async () => {
  const seed = Date.now() % 100_000;
  const random = seededRandom(seed);
  const dir = await tempDir('kill');
  const keys = await pki();
  const { repo } = await fsStore(dir);
  const config: ChildConfig = {
    storeUrl: pathToFileURL(join(dir, 'store')).href,
    spoolDir: join(dir, 'spool'),
    certPem: keys.server.certPem,
    keyPem: keys.server.keyPem,
    caPem: keys.ca.caPem,
    agentSerial: keys.agent.serial,
  };
  const configPath = join(dir, 'config.json');
  await writeFile(configPath, JSON.stringify(config));
  const connect = (port: number): Promise<ReplicationClient> =>
    Client.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      tls: { certPem: keys.agent.certPem, keyPem: keys.agent.keyPem, caPem: keys.ca.caPem },
      machineId: MACHINE,
      disks: [{ disk: DISK, generation: 1 }],
    });
  let highestAck = 0;
  let highestSent = 0;
  const children: ChildProcess[] = [];
  try {
    for (let round = 0; round < 6; round++) {
      const { child, port } = await startChild(configPath);
      children.push(child);
      const client = await connect(port);
      const welcomed = client.ackedSequence(DISK);
      assert.ok(welcomed >= highestAck, `seed ${seed} round ${round}: WELCOME says ${welcomed}, the agent saw ACK ${highestAck}`);
      assert.ok(welcomed <= highestSent, `seed ${seed} round ${round}: WELCOME says ${welcomed}, only ${highestSent} were sent`);
      highestAck = welcomed;
      // Kill at a random moment: while receiving, fsyncing, sealing or uploading.
      const timer = setTimeout(() => child.kill('SIGKILL'), 100 + random() * 700);
      let ended = false;
      void client.closed.then(() => (ended = true));
      const pending: Promise<unknown>[] = [];
      for (let seq = welcomed + 1; ; seq++) {
        const sizeBytes = 4096 * (1 + Math.floor(random() * 32));
        highestSent = Math.max(highestSent, seq);
        pending.push(
          client.sendSegment(makeSegment(seq, { sizeBytes })).then(
            (ack) => (highestAck = Math.max(highestAck, ack.sequence)),
            () => undefined,
          ),
        );
        if (pending.length >= 16) await pending.shift();
        if (ended) break;
      }
      await Promise.all(pending);
      clearTimeout(timer);
      child.kill('SIGKILL');
      await killed(child);
    }

    const { child, port } = await startChild(configPath);
    children.push(child);
    const client = await connect(port);
    const final = client.ackedSequence(DISK);
    assert.ok(final >= highestAck, `seed ${seed}: WELCOME says ${final}, the agent saw ACK ${highestAck}`);
    assert.ok(highestAck > 0, 'segments were acknowledged');
    await waitFor('every acknowledged segment in the store', async () => (await storedSegments(repo)).length >= final, 60_000);
    const stored = await storedSegments(repo);
    assert.deepEqual(
      stored.map((s) => s.sequence),
      Array.from({ length: final }, (_, i) => i + 1),
      `seed ${seed}`,
    );
    for (const seg of stored) {
      const want = makeSegment(seg.sequence, { sizeBytes: seg.extents[0]!.data.length });
      assert.ok(seg.extents[0]!.data.equals(want.extents[0]!.data), `seed ${seed}: segment ${seg.sequence} holds what was sent`);
    }
    await waitFor('the spool to empty', async () => (await spoolFiles(config.spoolDir)).length === 0, 30_000);
    await client.close();
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map(killed));
    await rm(dir, { recursive: true, force: true });
  }
});
