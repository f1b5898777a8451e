/**
 * The qemu compute driver (docs/recovery.md, "Compute drivers"): boots a
 * recovery point's disks on this host.
 *
 * - Instant serve: create() serves every disk's source read-only with
 *   Lifeboat's NBD server on `<dir>/nbd.sock` and makes an empty qcow2 overlay
 *   per disk; QEMU opens the overlay with the NBD export as its backing, so the
 *   machine starts at once whatever the disk size. start() then runs a
 *   `block-stream` job per disk that copies the rest into the overlay; when every
 *   job is done the machine is independent and the NBD server is closed.
 * - QEMU runs detached (-daemonize, pid in `qemu.pid`): it outlives the process
 *   that started it. list() reads the state directories; adopt() serves the
 *   sources again on the same socket (QEMU's NBD client reconnects within
 *   NBD_RECONNECT_DELAY_S) and restarts copy jobs that failed meanwhile.
 * - Acceleration is found out by trying (accel.ts): the first start without a
 *   verdict boots the machine's disks under KVM in a throwaway trial and keeps
 *   the verdict; TCG otherwise.
 * - Sources are borrowed: the driver reads them while the machine depends on
 *   them and never closes them; the caller may close them once the machine is
 *   independent (waitIndependent) or destroyed.
 * - readDisk(): on a running machine, an export of the disk node by QEMU's own
 *   NBD server (`exports.sock`); on a stopped one, qemu-nbd over the overlay
 *   (with the sources as its backing until the machine is independent).
 * - Change tracking: with trackChanges, the first start adds each disk's dirty
 *   bitmap through the qemu change tracker while the guest is still paused
 *   (-S), so the bitmap covers every write since boot; openChanges() opens a
 *   tracker on the same state (QMP on `qmp-changes.sock`). The bitmap records
 *   from the first boot, but a cut needs the disk node free of the copy job:
 *   cuts fail (TRACKER_FAILED, node busy) until the machine is independent.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlockSource } from '../../core/block-source.js';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { openQemuTracker } from '../../changetracking/qemu/qemu-tracker.js';
import { QmpClient } from '../../changetracking/qemu/qmp.js';
import type { ChangeTracker } from '../../changetracking/tracker.js';
import { NbdClient, nbdBlockSource } from '../../nbd/client.js';
import { BASE_ALLOCATION } from '../../nbd/protocol.js';
import { startNbdServer, type NbdServer } from '../../nbd/server.js';
import {
  MACHINE_ID,
  type ComputeDriver,
  type DriverProbe,
  type GuestCommandResult,
  type MachineDiskSpec,
  type MachineSpec,
  type MachineState,
  type MachineStatus,
} from '../driver.js';
import {
  checkId,
  checkSpec,
  createMachineDir,
  listMachineIds,
  machineDir,
  readMachineRecord,
  recordedSpec,
  removeMachineDir,
  writeMachineRecord,
  type MachineRecord,
} from '../machine-dir.js';
import { accelArgs, diskArgs, diskNode, FILES, overlayPath, qemuArgs, qmpChangesFile, srcNode, type DiskLayout } from './args.js';
import { accelOverride, readAccelVerdict, writeAccelVerdict, type Accel } from './accel.js';
import { consoleTail, runOnSerial, waitForConsoleLine } from './console.js';
import { openImageFile } from './image-reader.js';
import { livePid, missingQemu, runTool, waitForExit } from './process.js';

export interface QemuComputeOptions {
  /** Machines live in `<stateDir>/<id>/`; the acceleration verdict in `<stateDir>/accel.json`. */
  readonly stateDir: string;
  /** Read for LIFEBOAT_QEMU_ACCEL; default process.env. */
  readonly env?: NodeJS.ProcessEnv;
  readonly now?: () => Date;
  /** How long the KVM trial waits for the guest's first console line; default 30 s. */
  readonly kvmTrialMs?: number;
  /** Deadline for QEMU to daemonize and for each QMP command; default 60 s. */
  readonly qemuTimeoutMs?: number;
}

/** What the driver keeps in machine.json besides the spec and status. */
interface QemuState {
  readonly accel: Accel | null;
  readonly forwardedPorts: Readonly<Record<string, number>>;
  /** Disks whose copy finished: QEMU no longer reads their source. */
  readonly independentDisks: readonly string[];
  /** The bitmaps were added (first start done). */
  readonly booted: boolean;
}

/** What only this process holds for a machine: the served sources, the QMP connection, locks. */
interface Runtime {
  nbd: NbdServer | null;
  qmp: QmpClient | null;
  /** Serializes lifecycle changes and record writes. */
  lock: Promise<unknown>;
  /** Serializes use of the serial console (one client at a time). */
  serial: Promise<unknown>;
}

interface BlockJob {
  readonly device: string;
  readonly len: number;
  readonly offset: number;
  readonly status?: string;
}

interface NamedNode {
  readonly 'node-name': string;
  /** Set while the node has a backing (here: the NBD export of the source); gone once block-stream completed. */
  readonly backing_file?: string;
}

const DEFAULT_CONSOLE_BYTES = 1024 * 1024;
const POLL_MS = 500;

function qemuState(record: MachineRecord): QemuState {
  return record.driver as unknown as QemuState;
}

function streamJob(index: number): string {
  return `stream-${index}`;
}

export class QemuComputeDriver implements ComputeDriver {
  readonly name = 'qemu' as const;
  readonly capabilities = { boots: true, instantServe: true, guestCommands: true, changeTracking: true };
  private readonly runtimes = new Map<string, Runtime>();
  private accelDecision: Promise<Accel> | null = null;
  private readonly timeoutMs: number;

  constructor(private readonly options: QemuComputeOptions) {
    this.timeoutMs = options.qemuTimeoutMs ?? 60_000;
  }

  async probe(): Promise<DriverProbe> {
    const missing = missingQemu();
    if (missing !== null) return { available: false, reason: missing, accel: null };
    const accel = accelOverride(this.options.env) ?? (await readAccelVerdict(this.options.stateDir))?.accel ?? null;
    return { available: true, reason: null, accel };
  }

  async create(spec: MachineSpec, options: { signal?: AbortSignal } = {}): Promise<MachineStatus> {
    const missing = missingQemu();
    if (missing !== null) throw new LifeboatError('COMPUTE_UNAVAILABLE', `the qemu compute driver cannot run here: ${missing}`);
    checkSpec(spec);
    const dir = await createMachineDir(this.options.stateDir, spec.id);
    const runtime = this.runtime(spec.id);
    try {
      const forwardedPorts: Record<string, number> = {};
      for (const port of spec.forwardPorts ?? []) forwardedPorts[String(port)] = await freeLoopbackPort();
      for (const disk of spec.disks) {
        options.signal?.throwIfAborted();
        await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', overlayPath(dir, disk.name), String(disk.source.sizeBytes)]);
      }
      await this.serve(spec.id, spec.disks);
      const status: MachineStatus = {
        id: spec.id,
        name: spec.name,
        driver: 'qemu',
        state: 'created',
        accel: null,
        copyPercent: 0,
        independent: false,
        forwardedPorts,
        files: [...spec.disks.map((d) => overlayPath(dir, d.name)), join(dir, FILES.console)],
        createdAt: (this.options.now ?? (() => new Date()))().toISOString(),
      };
      const driverState: QemuState = { accel: null, forwardedPorts, independentDisks: [], booted: false };
      await writeMachineRecord(this.options.stateDir, {
        version: 1,
        spec: recordedSpec(spec),
        status,
        driver: { ...driverState },
      });
      return status;
    } catch (err) {
      await runtime.nbd?.close();
      this.runtimes.delete(spec.id);
      await removeMachineDir(this.options.stateDir, spec.id);
      throw err;
    }
  }

  async adopt(id: string, disks: readonly MachineDiskSpec[]): Promise<MachineStatus> {
    return this.locked(id, async () => {
      const record = await readMachineRecord(this.options.stateDir, id);
      const state = qemuState(record);
      for (const want of record.spec.disks) {
        const given = disks.find((d) => d.name === want.name);
        if (given === undefined) throw new LifeboatError('VALIDATION', `adopt of machine ${id}: disk ${want.name} is missing`);
        if (given.source.sizeBytes !== want.sizeBytes) {
          throw new LifeboatError('VALIDATION', `adopt of machine ${id}: disk ${want.name} has ${given.source.sizeBytes} bytes, the machine ${want.sizeBytes}`);
        }
      }
      if (state.independentDisks.length < record.spec.disks.length) {
        await this.serve(id, disks);
        if ((await this.pid(id)) !== undefined) await this.startStreams(id, record);
      }
      return this.liveStatus(record);
    });
  }

  async start(id: string, options: { signal?: AbortSignal } = {}): Promise<MachineStatus> {
    return this.locked(id, async () => {
      let record = await readMachineRecord(this.options.stateDir, id);
      if ((await this.pid(id)) !== undefined) return this.liveStatus(record);
      const state = qemuState(record);
      const dir = machineDir(this.options.stateDir, id);
      if (state.independentDisks.length < record.spec.disks.length && this.runtime(id).nbd === null) {
        throw new LifeboatError('COMPUTE_FAILED', `machine ${id} still reads its sources and they are not served: adopt it first`, { details: { id } });
      }
      const accel = await this.decideAccel(record, options.signal);
      options.signal?.throwIfAborted();
      for (const f of [FILES.qmp, ...record.spec.disks.map((_, i) => qmpChangesFile(i)), FILES.serial, FILES.pid]) await rm(join(dir, f), { force: true });
      await runTool(
        'qemu-system-x86_64',
        qemuArgs({
          dir,
          id,
          memoryMiB: record.spec.memoryMiB,
          cpus: record.spec.cpus,
          disks: record.spec.disks,
          accel,
          network: record.spec.network,
          forwardedPorts: state.forwardedPorts,
          independentDisks: new Set(state.independentDisks),
        }),
        { timeoutMs: this.timeoutMs },
      );
      try {
        const qmp = await this.qmp(id);
        if (record.spec.trackChanges && !state.booted) {
          // The trackers' bitmaps exist before the guest runs its first instruction.
          for (const disk of record.spec.disks) {
            const tracker = await this.tracker(id, record, disk.name);
            try {
              await tracker.open();
            } finally {
              await tracker.close();
            }
          }
        }
        await qmp.execute('cont');
      } catch (err) {
        await this.kill(id);
        throw asComputeError(err, `machine ${id} did not start`);
      }
      record = {
        ...record,
        status: { ...record.status, state: 'running', accel },
        driver: { ...state, accel, booted: true },
      };
      await writeMachineRecord(this.options.stateDir, record);
      await this.startStreams(id, record);
      return this.liveStatus(record);
    });
  }

  async stop(id: string, options: { graceful?: boolean; timeoutMs?: number } = {}): Promise<MachineStatus> {
    return this.locked(id, async () => {
      const record = await readMachineRecord(this.options.stateDir, id);
      const pid = await this.pid(id);
      if (pid !== undefined) {
        // Take the copy's last progress while QEMU can still answer.
        const live = await this.liveStatus(record);
        let gone = false;
        if (options.graceful === true) {
          try {
            await (await this.qmp(id)).execute('system_powerdown');
            gone = await waitForExit(pid, options.timeoutMs ?? 60_000);
          } catch {
            // QEMU is going away or not answering: the hard stop below ends it.
          }
        }
        if (!gone) await this.kill(id);
        return this.liveStatus({ ...(await readMachineRecord(this.options.stateDir, id)), status: { ...live, state: 'stopped' } }, true);
      }
      return this.liveStatus(record, record.status.state !== 'created');
    });
  }

  async destroy(id: string): Promise<void> {
    if (!MACHINE_ID.test(id)) return;
    await this.locked(id, async () => {
      await this.kill(id);
      const runtime = this.runtimes.get(id);
      await runtime?.nbd?.close();
      await removeMachineDir(this.options.stateDir, id);
    });
    this.runtimes.delete(id);
  }

  async status(id: string): Promise<MachineStatus> {
    return this.locked(id, async () => this.liveStatus(await readMachineRecord(this.options.stateDir, id)));
  }

  async list(): Promise<MachineStatus[]> {
    const out: MachineStatus[] = [];
    for (const id of await listMachineIds(this.options.stateDir)) {
      try {
        out.push(await this.status(id));
      } catch (err) {
        if (!isLifeboatError(err) || err.code !== 'NOT_FOUND') throw err; // destroyed meanwhile
      }
    }
    return out;
  }

  async waitIndependent(id: string, options: { signal?: AbortSignal; onProgress?: (percent: number) => void } = {}): Promise<MachineStatus> {
    let last = -1;
    for (;;) {
      const status = await this.status(id);
      if (status.copyPercent !== last) {
        last = status.copyPercent;
        options.onProgress?.(last);
      }
      if (status.independent) return status;
      if (status.state !== 'running') {
        throw new LifeboatError('COMPUTE_FAILED', `machine ${id} is ${status.state}: its background copy runs only while it runs`, { details: { id } });
      }
      const failed = await this.failedStreams(id);
      if (failed.length > 0) {
        throw new LifeboatError('COMPUTE_FAILED', `the background copy of machine ${id} stopped for disk ${failed.join(', ')}: adopt the machine to restart it`, {
          details: { id, disks: failed },
        });
      }
      if (options.signal?.aborted) throw new LifeboatError('TIMEOUT', `waiting for machine ${id} to become independent was aborted`);
      await sleep(POLL_MS, undefined, { signal: options.signal }).catch(() => undefined);
    }
  }

  async console(id: string, maxBytes = DEFAULT_CONSOLE_BYTES): Promise<string> {
    await readMachineRecord(this.options.stateDir, id);
    return consoleTail(join(machineDir(this.options.stateDir, id), FILES.console), maxBytes);
  }

  async waitForConsole(id: string, pattern: RegExp, options: { timeoutMs: number; signal?: AbortSignal }): Promise<{ line: string; atMs: number }> {
    await readMachineRecord(this.options.stateDir, id);
    return waitForConsoleLine(join(machineDir(this.options.stateDir, id), FILES.console), pattern, {
      ...options,
      id,
      running: async () => {
        if ((await this.pid(id)) !== undefined) return true;
        // Not started yet: its output is still to come.
        const record = await readMachineRecord(this.options.stateDir, id).catch(() => undefined);
        return record?.status.state === 'created';
      },
    });
  }

  async runInGuest(id: string, command: string, options: { timeoutMs: number; signal?: AbortSignal }): Promise<GuestCommandResult> {
    await readMachineRecord(this.options.stateDir, id);
    if ((await this.pid(id)) === undefined) throw new LifeboatError('COMPUTE_FAILED', `machine ${id} is not running`, { details: { id } });
    const runtime = this.runtime(id);
    const run = runtime.serial.then(() =>
      runOnSerial(join(machineDir(this.options.stateDir, id), FILES.serial), command, { ...options, id }),
    );
    runtime.serial = run.catch(() => undefined);
    return run;
  }

  async readDisk(id: string, disk: string): Promise<BlockSource> {
    const record = await readMachineRecord(this.options.stateDir, id);
    const index = record.spec.disks.findIndex((d) => d.name === disk);
    if (index < 0) throw new LifeboatError('NOT_FOUND', `machine ${id} has no disk ${disk}`, { details: { id, disk } });
    const dir = machineDir(this.options.stateDir, id);
    if ((await this.pid(id)) !== undefined) return this.exportRunningDisk(id, index);
    const independent = qemuState(record).independentDisks.includes(disk);
    if (!independent && this.runtime(id).nbd === null) {
      throw new LifeboatError('COMPUTE_FAILED', `disk ${disk} of machine ${id} still reads its source and it is not served: adopt the machine first`);
    }
    return openImageFile({
      path: overlayPath(dir, disk),
      format: 'qcow2',
      socketDir: dir,
      name: disk,
      backing: independent ? undefined : { driver: 'nbd', 'server.type': 'unix', 'server.path': join(dir, FILES.nbd), export: disk, 'read-only': 'on' },
    });
  }

  async openChanges(id: string, disk: string): Promise<ChangeTracker> {
    const record = await readMachineRecord(this.options.stateDir, id);
    if (!record.spec.trackChanges) throw new LifeboatError('UNSUPPORTED', `machine ${id} was created without trackChanges`, { details: { id } });
    if (!record.spec.disks.some((d) => d.name === disk)) throw new LifeboatError('NOT_FOUND', `machine ${id} has no disk ${disk}`, { details: { id, disk } });
    return this.tracker(id, record, disk);
  }

  /**
   * Lets go of every machine without stopping it, as the process ending would:
   * the sources' NBD servers and the QMP connections close, QEMU keeps running.
   * A later driver on the same state directory finds the machines (list) and
   * serves their sources again (adopt).
   */
  async release(): Promise<void> {
    for (const [id, runtime] of this.runtimes) {
      await runtime.lock.catch(() => undefined);
      await runtime.nbd?.close();
      await runtime.qmp?.close();
      this.runtimes.delete(id);
    }
  }

  // ---- internals ----

  private runtime(id: string): Runtime {
    let runtime = this.runtimes.get(id);
    if (runtime === undefined) {
      runtime = { nbd: null, qmp: null, lock: Promise.resolve(), serial: Promise.resolve() };
      this.runtimes.set(id, runtime);
    }
    return runtime;
  }

  private locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    checkId(id);
    const runtime = this.runtime(id);
    const run = runtime.lock.then(fn);
    runtime.lock = run.catch(() => undefined);
    return run;
  }

  private pid(id: string): Promise<number | undefined> {
    return livePid(join(machineDir(this.options.stateDir, id), FILES.pid));
  }

  /** Serves the disks' sources read-only on the machine's nbd.sock (again, after a restart). */
  private async serve(id: string, disks: readonly MachineDiskSpec[]): Promise<void> {
    const runtime = this.runtime(id);
    await runtime.nbd?.close();
    runtime.nbd = null;
    const socketPath = join(machineDir(this.options.stateDir, id), FILES.nbd);
    await rm(socketPath, { force: true });
    runtime.nbd = await startNbdServer({ exports: Object.fromEntries(disks.map((d) => [d.name, d.source])), listen: { socketPath } });
  }

  private async qmp(id: string): Promise<QmpClient> {
    const runtime = this.runtime(id);
    if (runtime.qmp !== null && !runtime.qmp.closed) return runtime.qmp;
    runtime.qmp = await QmpClient.connect({ socketPath: join(machineDir(this.options.stateDir, id), FILES.qmp), timeoutMs: this.timeoutMs });
    return runtime.qmp;
  }

  private tracker(id: string, record: MachineRecord, disk: string): Promise<ChangeTracker> {
    const dir = machineDir(this.options.stateDir, id);
    const index = record.spec.disks.findIndex((d) => d.name === disk);
    return openQemuTracker({
      qmpSocket: join(dir, qmpChangesFile(index)),
      node: diskNode(index),
      workDir: join(dir, `changes-${disk}`),
      nbdSocket: join(dir, FILES.exports),
      stateDir: join(dir, `changes-${disk}`),
      trackedFromStart: true,
    });
  }

  /** Starts a block-stream job for every disk that is neither independent nor being copied. */
  private async startStreams(id: string, record: MachineRecord): Promise<void> {
    const state = qemuState(record);
    const qmp = await this.qmp(id);
    const jobs = await qmp.execute<BlockJob[]>('query-block-jobs');
    const backed = await this.backedNodes(qmp);
    for (const [i, disk] of record.spec.disks.entries()) {
      if (state.independentDisks.includes(disk.name) || !backed.has(diskNode(i))) continue;
      if (jobs.some((j) => j.device === streamJob(i))) continue;
      await qmp.execute('block-stream', { 'job-id': streamJob(i), device: diskNode(i) });
    }
  }

/** Nodes that have a backing, by name: a disk node without one reads nothing from its source any more. */
  private async backedNodes(qmp: QmpClient): Promise<Set<string>> {
    const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
    return new Set(nodes.filter((n) => n.backing_file !== undefined && n.backing_file !== '').map((n) => n['node-name']));
  }

  /** Disks of a running machine that are neither copied nor being copied (their job failed). */
  private async failedStreams(id: string): Promise<string[]> {
    const record = await readMachineRecord(this.options.stateDir, id);
    const state = qemuState(record);
    if ((await this.pid(id)) === undefined) return [];
    const qmp = await this.qmp(id);
    const jobs = await qmp.execute<BlockJob[]>('query-block-jobs');
    const backed = await this.backedNodes(qmp);
    return record.spec.disks
      .filter((d, i) => !state.independentDisks.includes(d.name) && backed.has(diskNode(i)) && !jobs.some((j) => j.device === streamJob(i)))
      .map((d) => d.name);
  }

  /**
   * The status as it is now: running when QEMU lives, the copy's progress from
   * QEMU's jobs; a finished copy is recorded and the sources' NBD server closed.
   * Call under the machine's lock.
   */
  private async liveStatus(record: MachineRecord, stopped = false): Promise<MachineStatus> {
    const id = record.spec.id;
    let state = qemuState(record);
    const pid = await this.pid(id);
    let machineState: MachineState = record.status.state;
    if (pid === undefined && machineState === 'running') machineState = 'stopped';
    if (stopped) machineState = 'stopped';
    let copyPercent = record.status.copyPercent;
    if (pid !== undefined && state.independentDisks.length < record.spec.disks.length) {
      const progress = await this.copyProgress(id, record).catch(() => undefined); // QEMU exiting: keep the last known
      if (progress !== undefined) {
        copyPercent = progress.percent;
        state = { ...state, independentDisks: progress.independentDisks };
      }
    }
    const independent = state.independentDisks.length === record.spec.disks.length;
    if (independent) copyPercent = 100;
    const status: MachineStatus = { ...record.status, state: machineState, copyPercent, independent };
    if (JSON.stringify(status) !== JSON.stringify(record.status) || JSON.stringify(state) !== JSON.stringify(record.driver)) {
      await writeMachineRecord(this.options.stateDir, { ...record, status, driver: { ...state } });
    }
    if (independent) {
      const runtime = this.runtimes.get(id);
      await runtime?.nbd?.close();
      if (runtime) runtime.nbd = null;
    }
    return status;
  }

  private async copyProgress(id: string, record: MachineRecord): Promise<{ percent: number; independentDisks: string[] }> {
    const qmp = await this.qmp(id);
    const jobs = await qmp.execute<BlockJob[]>('query-block-jobs');
    const backed = await this.backedNodes(qmp);
    const state = qemuState(record);
    const total = record.spec.disks.reduce((n, d) => n + d.sizeBytes, 0);
    let done = 0;
    const independentDisks: string[] = [];
    record.spec.disks.forEach((disk, i) => {
      if (state.independentDisks.includes(disk.name) || !backed.has(diskNode(i))) {
        independentDisks.push(disk.name);
        done += disk.sizeBytes;
        return;
      }
      const job = jobs.find((j) => j.device === streamJob(i));
      if (job !== undefined && job.len > 0) done += (disk.sizeBytes * job.offset) / job.len;
    });
    // A copied disk's source node is detached; delete it, so QEMU stops holding (and re-dialling) a connection to the sources.
    for (const [i, disk] of record.spec.disks.entries()) {
      if (independentDisks.includes(disk.name) && !state.independentDisks.includes(disk.name)) {
        await qmp.execute('blockdev-del', { 'node-name': srcNode(i) }).catch(() => undefined); // gone already: nothing to do
      }
    }
    const percent = independentDisks.length === record.spec.disks.length ? 100 : Math.min(99, Math.floor((done * 100) / total));
    return { percent, independentDisks };
  }

  /** Ends QEMU: `quit` over QMP (QEMU flushes its images and bitmaps), SIGKILL when that does not work. */
  private async kill(id: string): Promise<void> {
    const runtime = this.runtime(id);
    const pid = await this.pid(id);
    if (pid !== undefined) {
      try {
        await (await this.qmp(id)).execute('quit', undefined, { timeoutMs: 10_000 });
      } catch {
        // Not answering, or the connection closed as QEMU quit: checked below.
      }
      if (!(await waitForExit(pid, 15_000))) {
        process.kill(pid, 'SIGKILL');
        await waitForExit(pid, 15_000);
      }
    }
    await runtime.qmp?.close();
    runtime.qmp = null;
  }

  /** A read-only export of the running disk node by QEMU's own NBD server, removed at close(). */
  private async exportRunningDisk(id: string, index: number): Promise<BlockSource> {
    const dir = machineDir(this.options.stateDir, id);
    const qmp = await this.qmp(id);
    const socketPath = join(dir, FILES.exports);
    try {
      await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socketPath } } });
    } catch (err) {
      if (!/already running/i.test((err as Error).message)) throw asComputeError(err, `machine ${id}: QEMU's NBD server did not start`);
    }
    const exportId = `read-${index}-${randomBytes(4).toString('hex')}`;
    await qmp.execute('block-export-add', { type: 'nbd', id: exportId, 'node-name': diskNode(index), name: exportId, writable: false });
    let client: NbdClient;
    try {
      client = await NbdClient.connect({ target: { socketPath }, exportName: exportId, metaContexts: [BASE_ALLOCATION] });
    } catch (err) {
      await qmp.execute('block-export-del', { id: exportId, mode: 'hard' }).catch(() => undefined);
      throw err;
    }
    return nbdBlockSource(client, async () => {
      // QEMU may have stopped meanwhile: then the export is gone with it.
      if ((await this.pid(id)) !== undefined) await (await this.qmp(id)).execute('block-export-del', { id: exportId, mode: 'hard' }).catch(() => undefined);
    });
  }

  /** LIFEBOAT_QEMU_ACCEL, else the kept verdict, else a KVM trial with this machine's disks (once per state directory). */
  private async decideAccel(record: MachineRecord, signal?: AbortSignal): Promise<Accel> {
    const override = accelOverride(this.options.env);
    if (override !== undefined) return override;
    const kept = await readAccelVerdict(this.options.stateDir);
    if (kept !== undefined) return kept.accel;
    this.accelDecision ??= this.kvmTrial(record, signal).finally(() => {
      this.accelDecision = null;
    });
    return this.accelDecision;
  }

  /**
   * Boots the machine's disks under KVM in a throwaway copy (its own overlays,
   * no network, console to a file) and waits for the guest to print a line. A
   * guest that prints within kvmTrialMs proves KVM runs real guests here; QEMU
   * failing (no /dev/kvm, `-cpu host` refused) or a silent guest means TCG. The
   * verdict is kept in accel.json.
   */
  private async kvmTrial(record: MachineRecord, signal?: AbortSignal): Promise<Accel> {
    const trialMs = this.options.kvmTrialMs ?? 30_000;
    const dir = machineDir(this.options.stateDir, record.spec.id);
    const work = join(dir, 'kvm-trial');
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { mode: 0o700 });
    const consolePath = join(work, 'console.log');
    const state = qemuState(record);
    try {
      const disks: readonly DiskLayout[] = record.spec.disks;
      for (const disk of disks) {
        await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', join(work, `${disk.name}.qcow2`), String(disk.sizeBytes)]);
      }
      // The trial's overlays sit on the machine's overlay, which sits on the source: the machine's files are only read.
      const args = [
        '-machine',
        'pc',
        ...accelArgs('kvm', record.spec.cpus),
        '-m',
        String(record.spec.memoryMiB),
        '-smp',
        String(record.spec.cpus),
        '-nodefaults',
        '-no-user-config',
        '-display',
        'none',
        '-serial',
        `file:${consolePath}`,
        ...trialDiskArgs(dir, work, disks, new Set(state.independentDisks)),
        '-nic',
        'none',
      ];
      const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      let exit: string | null = null;
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exited = new Promise<void>((resolve) => {
        child.on('exit', (code, sig) => {
          exit = sig ?? `exit ${code}`;
          resolve();
        });
        child.on('error', (err) => {
          exit = err.message;
          resolve();
        });
      });
      const deadline = Date.now() + trialMs;
      let printed = false;
      while (exit === null && Date.now() < deadline && !signal?.aborted) {
        printed = (await consoleTail(consolePath, 64 * 1024)).includes('\n');
        if (printed) break;
        await Promise.race([exited, sleep(200)]);
      }
      printed ||= (await consoleTail(consolePath, 64 * 1024)).includes('\n');
      if (exit === null) {
        child.kill('SIGKILL');
        await exited;
      }
      signal?.throwIfAborted();
      const accel: Accel = printed ? 'kvm' : 'tcg';
      const reason = printed
        ? 'a guest printed on its console under KVM'
        : exit !== null && !printed
          ? `QEMU under KVM ended (${String(exit)}) before the guest printed: ${stderr.trim().slice(0, 500)}`
          : `the guest printed nothing within ${trialMs} ms under KVM`;
      await writeAccelVerdict(this.options.stateDir, { accel, reason, decidedAt: new Date().toISOString() });
      return accel;
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
}

/** The trial's disks: a throwaway overlay over the machine's overlay, itself over the source until the copy is done. */
function trialDiskArgs(dir: string, work: string, disks: readonly DiskLayout[], independent: ReadonlySet<string>): string[] {
  const args = diskArgs(dir, disks, independent, (disk) => overlayPath(dir, disk));
  // Re-point each disk: machine overlay read-only as a backing, trial overlay on top.
  const out: string[] = [];
  for (let i = 0; i < args.length; i += 2) {
    const flag = args[i] as string;
    let value = args[i + 1] as string;
    if (flag === '-blockdev' && value.startsWith('driver=qcow2,')) {
      const index = /node-name=disk-(\d+)/.exec(value)?.[1] as string;
      const disk = disks[Number(index)] as DiskLayout;
      out.push('-blockdev', value.replace(`node-name=disk-${index}`, `node-name=base-${index}`).concat(',read-only=on'));
      out.push('-blockdev', `driver=file,node-name=trial-file-${index},filename=${join(work, `${disk.name}.qcow2`).replaceAll(',', ',,')}`);
      out.push('-blockdev', `driver=qcow2,node-name=disk-${index},file=trial-file-${index},backing=base-${index}`);
      continue;
    }
    if (flag === '-blockdev' && value.startsWith('driver=file,')) value = `${value},read-only=on`;
    out.push(flag, value);
  }
  return out;
}

/** A free TCP port on loopback, for a forwarded guest port. */
function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function asComputeError(err: unknown, what: string): LifeboatError {
  if (isLifeboatError(err) && err.code !== 'TRACKER_FAILED') return err;
  return new LifeboatError('COMPUTE_FAILED', `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
