/**
 * The fake compute driver, for unit tests: machines live in memory, "boot" by
 * printing a console line built from their first disk's first bytes, and can be
 * told to fail. It keeps the contract (test/compute/contract.ts) so the vault's
 * recovery jobs are tested against it without QEMU.
 */
import type { BlockSource } from '../core/block-source.js';
import type { ChangeTracker } from '../changetracking/tracker.js';
import { LifeboatError } from '../core/errors.js';
import {
  MACHINE_ID,
  type ComputeDriver,
  type DriverProbe,
  type GuestCommandResult,
  type MachineDiskSpec,
  type MachineSpec,
  type MachineStatus,
} from './driver.js';

interface FakeMachine {
  spec: MachineSpec;
  status: MachineStatus;
  console: string;
  /** The disks' content as the guest sees it (copied from the sources at create). */
  disks: Map<string, Buffer>;
  /** With `trackChanges` (and the driver's `changeTracking` option): the 4 KiB blocks written since the last committed cut, per disk. */
  dirty: Map<string, Set<number>>;
}

export interface FakeComputeOptions {
  /** What `start` prints on the console; default `FAKE-BOOTED <machine id> <first 16 bytes of disk 0 as hex>`. */
  readonly bootLine?: (spec: MachineSpec, firstBytes: Buffer) => string;
  /** Makes `create` or `start` fail with COMPUTE_FAILED. */
  readonly failOn?: 'create' | 'start';
  /** Answers runInGuest; default: exit 0 with the command echoed. */
  readonly guest?: (id: string, command: string) => GuestCommandResult;
  readonly now?: () => Date;
  /** openChanges() works for machines created with `trackChanges`: writes through `write()` are tracked. */
  readonly changeTracking?: boolean;
}

const FAKE_TRACK_BYTES = 4096;

export class FakeComputeDriver implements ComputeDriver {
  readonly name = 'fake' as const;
  get capabilities() {
    return { boots: true, instantServe: true, guestCommands: true, changeTracking: this.options.changeTracking === true };
  }
  private readonly machines = new Map<string, FakeMachine>();
  private readonly waiters = new Set<() => void>();

  /** Makes `create` or `start` fail with COMPUTE_FAILED from now on (tests change it between calls). */
  failOn: FakeComputeOptions['failOn'];

  constructor(private readonly options: FakeComputeOptions = {}) {
    this.failOn = options.failOn;
  }

  /** Test hook: what the fake holds. */
  get size(): number {
    return this.machines.size;
  }

  async probe(): Promise<DriverProbe> {
    return { available: true, reason: null, accel: 'tcg' };
  }

  async create(spec: MachineSpec): Promise<MachineStatus> {
    if (!MACHINE_ID.test(spec.id)) throw new LifeboatError('VALIDATION', `machine id ${JSON.stringify(spec.id)} must match ${MACHINE_ID}`);
    if (this.machines.has(spec.id)) throw new LifeboatError('CONFLICT', `machine ${spec.id} exists`);
    if (spec.disks.length === 0) throw new LifeboatError('VALIDATION', 'a machine needs at least one disk');
    if (this.failOn === 'create') throw new LifeboatError('COMPUTE_FAILED', `fake: create of ${spec.id} fails as told`);
    const disks = new Map<string, Buffer>();
    for (const d of spec.disks) disks.set(d.name, await d.source.read(0, d.source.sizeBytes));
    const status: MachineStatus = {
      id: spec.id,
      name: spec.name,
      driver: 'fake',
      state: 'created',
      accel: 'tcg',
      copyPercent: 100,
      independent: true,
      forwardedPorts: Object.fromEntries((spec.forwardPorts ?? []).map((p, i) => [String(p), 20000 + i])),
      files: [],
      createdAt: (this.options.now ?? (() => new Date()))().toISOString(),
    };
    this.machines.set(spec.id, { spec, status, console: '', disks, dirty: new Map([...disks.keys()].map((name) => [name, new Set<number>()])) });
    return status;
  }

  async adopt(id: string, _disks: readonly MachineDiskSpec[]): Promise<MachineStatus> {
    return this.status(id);
  }

  async start(id: string): Promise<MachineStatus> {
    const m = this.get(id);
    if (this.failOn === 'start') throw new LifeboatError('COMPUTE_FAILED', `fake: start of ${id} fails as told`);
    if (m.status.state !== 'running') {
      m.status = { ...m.status, state: 'running' };
      const first = [...m.disks.values()][0] ?? Buffer.alloc(0);
      const line = this.options.bootLine?.(m.spec, first) ?? `FAKE-BOOTED ${id} ${first.subarray(0, 16).toString('hex')}`;
      m.console += `fake firmware\n${line}\n`;
      for (const wake of this.waiters) wake();
    }
    return m.status;
  }

  async stop(id: string): Promise<MachineStatus> {
    const m = this.get(id);
    m.status = { ...m.status, state: 'stopped' };
    for (const wake of this.waiters) wake();
    return m.status;
  }

  async destroy(id: string): Promise<void> {
    this.machines.delete(id);
    for (const wake of this.waiters) wake();
  }

  async status(id: string): Promise<MachineStatus> {
    return this.get(id).status;
  }

  async list(): Promise<MachineStatus[]> {
    return [...this.machines.values()].map((m) => m.status);
  }

  async waitIndependent(id: string): Promise<MachineStatus> {
    return this.get(id).status;
  }

  async console(id: string, maxBytes = 1024 * 1024): Promise<string> {
    return this.get(id).console.slice(-maxBytes);
  }

  async waitForConsole(id: string, pattern: RegExp, options: { timeoutMs: number; signal?: AbortSignal }): Promise<{ line: string; atMs: number }> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      const m = this.machines.get(id);
      if (!m) throw new LifeboatError('NOT_FOUND', `no machine ${id}`);
      const line = m.console.split('\n').find((l) => pattern.test(l));
      if (line !== undefined) return { line, atMs: Date.now() };
      if (m.status.state === 'stopped') throw new LifeboatError('COMPUTE_FAILED', `machine ${id} stopped before its console showed ${pattern}: ${m.console.slice(-500)}`);
      if (options.signal?.aborted) throw new LifeboatError('TIMEOUT', `waiting for ${id}'s console was aborted`);
      const left = deadline - Date.now();
      if (left <= 0) throw new LifeboatError('TIMEOUT', `machine ${id}'s console did not show ${pattern} within ${options.timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 50));
        this.waiters.add(done);
      });
    }
  }

  async runInGuest(id: string, command: string): Promise<GuestCommandResult> {
    const m = this.get(id);
    if (m.status.state !== 'running') throw new LifeboatError('COMPUTE_FAILED', `machine ${id} is not running`);
    return this.options.guest?.(id, command) ?? { exitCode: 0, output: `${command}\n` };
  }

  async readDisk(id: string, disk: string): Promise<BlockSource> {
    const data = this.get(id).disks.get(disk);
    if (!data) throw new LifeboatError('NOT_FOUND', `machine ${id} has no disk ${disk}`);
    return {
      sizeBytes: data.length,
      read: async (offset, length) => Buffer.from(data.subarray(offset, offset + length)),
      extents: async (offset, length) => [{ offset, length, zero: false }],
      close: async () => {},
    };
  }

  async openChanges(id: string, disk: string): Promise<ChangeTracker> {
    const m = this.get(id);
    if (this.options.changeTracking !== true || m.spec.trackChanges !== true) throw new LifeboatError('UNSUPPORTED', 'the fake compute driver does not track changes of this machine');
    const dirty = m.dirty.get(disk);
    const data = m.disks.get(disk);
    if (!dirty || !data) throw new LifeboatError('NOT_FOUND', `machine ${id} has no disk ${disk}`);
    let open = false;
    let cuts = 0;
    return {
      kind: 'qemu',
      capabilities: { pointInTime: true, exactExtents: true },
      open: async () => ({ continuity: 'continuous' }),
      settle: async () => {},
      close: async () => {},
      cut: async () => {
        if (open) throw new LifeboatError('CONFLICT', 'a cut is open');
        open = true;
        const blocks = [...dirty].sort((a, b) => a - b);
        dirty.clear();
        // Point in time: the data as of the cut.
        const extents = blocks.map((b) => ({ offset: b * FAKE_TRACK_BYTES, data: Buffer.from(data.subarray(b * FAKE_TRACK_BYTES, (b + 1) * FAKE_TRACK_BYTES)) }));
        let settled = false;
        return {
          id: `fake-${++cuts}`,
          sizeBytes: data.length,
          capturedAtMs: Date.now(),
          full: false,
          estimatedBytes: extents.reduce((n, e) => n + e.data.length, 0),
          changes: async function* () {
            yield* extents;
          },
          commit: async () => {
            settled = true;
            open = false;
          },
          abort: async () => {
            if (!settled) for (const b of blocks) dirty.add(b);
            settled = true;
            open = false;
          },
        };
      },
    };
  }

  /** Test hook: the guest writes to its disk. */
  write(id: string, disk: string, offset: number, data: Buffer): void {
    const d = this.get(id).disks.get(disk);
    if (!d) throw new LifeboatError('NOT_FOUND', `machine ${id} has no disk ${disk}`);
    data.copy(d, offset);
    const dirty = this.get(id).dirty.get(disk);
    if (dirty && data.length > 0) for (let b = Math.floor(offset / FAKE_TRACK_BYTES); b <= Math.floor((offset + data.length - 1) / FAKE_TRACK_BYTES); b++) dirty.add(b);
  }

  private get(id: string): FakeMachine {
    const m = this.machines.get(id);
    if (!m) throw new LifeboatError('NOT_FOUND', `no machine ${id}`);
    return m;
  }
}
