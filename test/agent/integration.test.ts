import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { openSync, closeSync, writeSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Agent, type AgentEvent } from '../../src/agent/agent.js';
import { parseAgentFileConfig, type AgentConfig } from '../../src/agent/config.js';
import { replicationTransport } from '../../src/agent/replication-transport.js';
import { StateDir } from '../../src/agent/state.js';
import { registryTrackers } from '../../src/agent/trackers.js';
import type { OutgoingSegment } from '../../src/protocol/messages.js';
import { processJournal } from '../../src/store/journal.js';
import { PointReader } from '../../src/store/point-reader.js';
import { DISK, ITEM, MACHINE, harness, storedSegments, tempDir, waitFor } from '../process-server/harness.js';
import { FakeVault, replay } from './fakes.js';

const MiB = 2 ** 20;

function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

describe('agent with a real process server (TLS on loopback) and the scan tracker', () => {
  it('ships an image file; the store ends up with segments whose replay equals the image, after an initial and an incremental cut', async (t) => {
    const ps = await harness();
    const dir = await tempDir('agent-int');
    t.after(async () => {
      await ps.cleanup();
      await rm(dir, { recursive: true, force: true });
    });
    const image = join(dir, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, 24 * MiB);
    writeAt(image, 0, randomBytes(3 * MiB)); // 20 MiB of data in all: the full cut needs two segments
    writeAt(image, 5 * MiB, randomBytes(17 * MiB));
    const config: AgentConfig = {
      generation: 1,
      paused: false,
      throttleBytesPerSec: 0,
      crashConsistentFrequencySeconds: 1,
      appConsistentFrequencyMinutes: 0,
      disks: [{ name: 'sda', storeDisk: DISK }],
      processServer: { host: '127.0.0.1', port: ps.server.port, serverName: 'localhost' },
    };
    const stateDir = join(dir, 'agent');
    const events: AgentEvent[] = [];
    const agent = new Agent({
      stateDir,
      config: parseAgentFileConfig({ disks: [{ name: 'sda', tracker: { kind: 'scan', path: image } }] }),
      initialConfig: config,
      identity: { machineId: MACHINE, itemId: ITEM, credential: 'unused' },
      vault: new FakeVault(config),
      connect: replicationTransport({ certificatePem: ps.pki.agent.certPem, keyPem: ps.pki.agent.keyPem, caPem: ps.pki.ca.caPem }),
      openTracker: registryTrackers(new StateDir(stateDir)),
      onEvent: (e) => events.push(e),
    });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    const committed = () => events.filter((e): e is Extract<AgentEvent, { event: 'cut-committed' }> => e.event === 'cut-committed');
    try {
      await waitFor('the initial cut', () => committed().length >= 1, 60_000);
      assert.equal(committed()[0]?.full, true);
      assert.ok((committed()[0]?.lastSequence ?? 0) >= 2, 'the full cut took more than one segment');
      writeAt(image, 12 * MiB + 4096, randomBytes(8192));
      writeAt(image, 23 * MiB, Buffer.alloc(4096, 7));
      // The scan tracker reads while a cut ships (it is not point-in-time): only a cut that
      // started after the writes is sure to have read them all.
      const mark = events.length;
      await waitFor('a cut started after the writes to commit', () => {
        const started = new Set(events.slice(mark).flatMap((e) => (e.event === 'cut-started' ? [e.cutId] : [])));
        return committed().some((c) => started.has(c.cutId));
      }, 60_000);
    } finally {
      stop.abort();
      await running;
    }
    await ps.server.drained();
    const segs = await storedSegments(ps.repo, DISK);
    const asOutgoing: OutgoingSegment[] = segs.map((s) => ({ ...s, disk: DISK, capturedAtMs: s.createdAtMs, flags: s.flags ?? 0 }));
    assert.deepEqual(
      asOutgoing.map((s) => s.sequence),
      asOutgoing.map((_, i) => i + 1),
      'contiguous sequences from 1',
    );
    const { bytes } = replay(asOutgoing, 24 * MiB);
    assert.ok(bytes.equals(readFileSync(image)), 'the replayed segments equal the image');
    // The replica processor makes points of whole cuts; the newest equals the image.
    let point = await processJournal(ps.repo, DISK);
    for (let next = point; next; next = await processJournal(ps.repo, DISK)) point = next;
    assert.ok(point, 'a point was made');
    const reader = await PointReader.open(ps.repo, point, { workers: 0 });
    try {
      assert.equal(reader.sizeBytes, 24 * MiB);
      assert.ok((await reader.read(0, 24 * MiB)).equals(readFileSync(image)), 'the newest point equals the image');
    } finally {
      await reader.close();
    }
    const state = new StateDir(stateDir).diskState('sda');
    assert.equal(state?.inFlight, null);
    assert.equal(state?.nextSequence, asOutgoing.length + 1);
  });
});
