import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LifeboatError } from '../../src/core/errors.js';
import { FsStorage } from '../../src/storage/fs/fs-storage.js';
import type { ByteRange, ObjectInfo, PutOptions, Storage } from '../../src/storage/storage.js';
import { Repository } from '../../src/store/repository.js';
import { listSegments, readSegment } from '../../src/store/journal.js';
import type { JournalSegment } from '../../src/format/segment.js';
import { startProcessServer, type ProcessServer, type ProcessServerOptions } from '../../src/process-server/server.js';
import type { AgentGrant, ProcessServerBackend } from '../../src/process-server/backend.js';
import { ReplicationClient, type ReplicationClientOptions } from '../../src/protocol/client.js';
import type { OutgoingSegment } from '../../src/protocol/messages.js';
import { TestCa, type TestCertificate } from '../helpers/pki.js';
import { PASS, TEST_SCRYPT } from '../helpers/store.js';

export const VAULT = 'vault-1';
export const MACHINE = 'm-0001';
export const ITEM = 'item1';
export const DISK = `${ITEM}.sda`;
export const DISK2 = `${ITEM}.sdb`;

/** A vault in miniature: machines with their current serial and grant, and the store. */
export class FakeBackend implements ProcessServerBackend {
  readonly machines = new Map<string, { serial: string; grant: AgentGrant }>();
  authorizeCalls = 0;

  constructor(public repo: Repository) {}

  async authorize(input: { machineId: string; certificateSerial: string }): Promise<AgentGrant> {
    this.authorizeCalls++;
    const m = this.machines.get(input.machineId);
    if (!m) throw new LifeboatError('AGENT_UNAUTHORIZED', `machine ${input.machineId} is unknown`);
    if (m.serial !== input.certificateSerial) throw new LifeboatError('AGENT_UNAUTHORIZED', `certificate ${input.certificateSerial} of machine ${input.machineId} was replaced`);
    return m.grant;
  }

  async repository(vaultId: string): Promise<Repository> {
    if (vaultId !== VAULT) throw new LifeboatError('NOT_FOUND', `no vault ${vaultId}`);
    return this.repo;
  }
}

/** Storage whose puts wait while a gate is closed: an upload that blocks. */
export class GatedStorage implements Storage {
  private gate: Promise<void> | undefined;
  private openGate: () => void = () => {};
  readonly url: string;
  readonly capabilities: Storage['capabilities'];

  constructor(private readonly inner: Storage) {
    this.url = inner.url;
    this.capabilities = inner.capabilities;
  }

  block(): void {
    this.gate ??= new Promise((resolve) => (this.openGate = resolve));
  }

  unblock(): void {
    this.openGate();
    this.gate = undefined;
  }

  async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.gate && key.startsWith('journal/')) await this.gate;
    return this.inner.put(key, data, options);
  }
  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.inner.get(key, range);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Storage that is down (every call STORAGE_UNAVAILABLE) while `down` is set: an outage. */
export class OutageStorage implements Storage {
  down = false;
  failedCalls = 0;
  readonly url: string;
  readonly capabilities: Storage['capabilities'];

  constructor(private readonly inner: Storage) {
    this.url = inner.url;
    this.capabilities = inner.capabilities;
  }

  private check(op: string): void {
    if (!this.down) return;
    this.failedCalls++;
    throw new LifeboatError('STORAGE_UNAVAILABLE', `storage is down (${op})`);
  }
  async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    this.check('put');
    return this.inner.put(key, data, options);
  }
  async get(key: string, range?: ByteRange): Promise<Buffer> {
    this.check('get');
    return this.inner.get(key, range);
  }
  async stat(key: string): Promise<ObjectInfo | undefined> {
    this.check('stat');
    return this.inner.stat(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.check('list');
    yield* this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    this.check('delete');
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface Pki {
  ca: TestCa;
  server: TestCertificate;
  agent: TestCertificate;
}

let pkiOnce: Promise<Pki> | undefined;
export function pki(): Promise<Pki> {
  pkiOnce ??= (async () => {
    const ca = await TestCa.create();
    return { ca, server: await ca.serverCert(), agent: await ca.agentCert(MACHINE) };
  })();
  return pkiOnce;
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `lifeboat-${prefix}-`));
}

export async function fsStore(dir: string): Promise<{ storage: Storage; repo: Repository }> {
  const storage = await FsStorage.open(pathToFileURL(join(dir, 'store')));
  const { repo } = await Repository.init(storage, { passphrase: PASS, scrypt: TEST_SCRYPT });
  return { storage, repo };
}

export interface Harness {
  dir: string;
  spoolDir: string;
  pki: Pki;
  repo: Repository;
  backend: FakeBackend;
  server: ProcessServer;
  /** The store's storage as the process server sees it (gated: uploads can be blocked). */
  gate: GatedStorage;
  clientOptions(extra?: Partial<ReplicationClientOptions>): ReplicationClientOptions;
  connect(extra?: Partial<ReplicationClientOptions>): Promise<ReplicationClient>;
  restart(extra?: Partial<ProcessServerOptions>): Promise<void>;
  cleanup(): Promise<void>;
}

export async function harness(options: { serverOptions?: Partial<ProcessServerOptions>; storage?: (inner: Storage) => Storage; generation?: number } = {}): Promise<Harness> {
  const dir = await tempDir('ps');
  const keys = await pki();
  const { storage, repo: plain } = await fsStore(dir);
  void plain;
  const gate = new GatedStorage(options.storage ? options.storage(storage) : storage);
  const repo = await Repository.open(gate, PASS);
  const backend = new FakeBackend(repo);
  backend.machines.set(MACHINE, {
    serial: keys.agent.serial,
    grant: { machineId: MACHINE, itemId: ITEM, vaultId: VAULT, generation: options.generation ?? 1, disks: [DISK, DISK2] },
  });
  const spoolDir = join(dir, 'spool');
  const serverOptions = (extra: Partial<ProcessServerOptions> = {}): ProcessServerOptions => ({
    host: '127.0.0.1',
    port: 0,
    tls: { certPem: keys.server.certPem, keyPem: keys.server.keyPem, caPem: keys.ca.caPem },
    spoolDir,
    spoolLimitBytes: 256 * 1024 * 1024,
    workers: 2,
    backend,
    uploadRetryBaseMs: 20,
    uploadRetryMaxMs: 200,
    ...options.serverOptions,
    ...extra,
  });
  const h: Harness = {
    dir,
    spoolDir,
    pki: keys,
    repo,
    gate,
    backend,
    server: await startProcessServer(serverOptions()),
    clientOptions: (extra = {}) => ({
      host: '127.0.0.1',
      port: h.server.port,
      servername: 'localhost',
      tls: { certPem: keys.agent.certPem, keyPem: keys.agent.keyPem, caPem: keys.ca.caPem },
      machineId: MACHINE,
      disks: [{ disk: DISK, generation: options.generation ?? 1 }],
      ...extra,
    }),
    connect: (extra = {}) => ReplicationClient.connect(h.clientOptions(extra)),
    async restart(extra = {}) {
      await h.server.close();
      h.server = await startProcessServer(serverOptions(extra));
    },
    async cleanup() {
      await h.server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return h;
}

/** Deterministic pseudo-random bytes (xorshift), half of them a repeated pattern so zstd has something to do. */
export function segmentData(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i % 8192 < 4096) b.writeUInt32LE(x, i);
    else b.writeUInt32LE(0x01020304, i);
  }
  return b;
}

export function makeSegment(sequence: number, options: { disk?: string; generation?: number; sizeBytes?: number; flags?: number } = {}): OutgoingSegment {
  const diskSizeBytes = 64 * 1024 * 1024;
  const len = options.sizeBytes ?? 64 * 1024;
  const offset = ((sequence * 7919) % 900) * 65536;
  return {
    disk: options.disk ?? DISK,
    generation: options.generation ?? 1,
    sequence,
    flags: options.flags ?? 0,
    diskSizeBytes,
    capturedAtMs: 1_780_000_000_000 + sequence,
    extents: [
      { offset, data: segmentData(len, sequence) },
      { offset: offset + len + 4096, data: segmentData(4096, sequence + 1_000_000) },
    ],
  };
}

/** The segments of a disk in the store, read back. */
export async function storedSegments(repo: Repository, disk = DISK): Promise<JournalSegment[]> {
  const out: JournalSegment[] = [];
  for (const info of await listSegments(repo, disk)) out.push(await readSegment(repo, disk, info));
  return out;
}

/** Spooled segment files (*.seg) under the spool. */
export async function spoolFiles(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(d, n);
      if ((await stat(p)).isDirectory()) await walk(p);
      else if (n.endsWith('.seg')) out.push(p);
    }
  };
  await walk(spoolDir);
  return out.sort();
}

export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
