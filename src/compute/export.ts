/**
 * The export compute driver: a "machine" is its disks written as image files
 * (raw, qcow2 or VHD, through src/export) into `<stateDir>/<id>/`, for an
 * operator to import into a hypervisor elsewhere. It boots nothing: start() is
 * UNSUPPORTED and says where the files are; the files are complete when
 * create() resolves (copyPercent 100, independent), and destroy() removes them.
 */
import { join } from 'node:path';
import type { BlockSource } from '../core/block-source.js';
import type { ChangeTracker } from '../changetracking/tracker.js';
import { LifeboatError } from '../core/errors.js';
import { exportImage, type ImageFormat } from '../export/index.js';
import { DiskFile } from '../io/disk-file.js';
import type {
  ComputeDriver,
  DriverProbe,
  GuestCommandResult,
  MachineDiskSpec,
  MachineSpec,
  MachineStatus,
} from './driver.js';
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
} from './machine-dir.js';
import { openImageFile } from './qemu/image-reader.js';

export interface ExportComputeOptions {
  readonly stateDir: string;
  /** Default qcow2. */
  readonly format?: ImageFormat;
  readonly now?: () => Date;
}

const EXTENSIONS: Record<ImageFormat, string> = { raw: 'raw', qcow2: 'qcow2', vhd: 'vhd', 'vhd-fixed': 'vhd' };

export class ExportComputeDriver implements ComputeDriver {
  readonly name = 'export' as const;
  readonly capabilities = { boots: false, instantServe: false, guestCommands: false, changeTracking: false };
  private readonly format: ImageFormat;

  constructor(private readonly options: ExportComputeOptions) {
    this.format = options.format ?? 'qcow2';
  }

  async probe(): Promise<DriverProbe> {
    return { available: true, reason: null, accel: null };
  }

  async create(spec: MachineSpec, options: { signal?: AbortSignal } = {}): Promise<MachineStatus> {
    checkSpec(spec);
    const dir = await createMachineDir(this.options.stateDir, spec.id);
    try {
      const files: string[] = [];
      for (const disk of spec.disks) {
        options.signal?.throwIfAborted();
        const path = join(dir, `${disk.name}.${EXTENSIONS[this.format]}`);
        await exportImage(disk.source, { format: this.format, path });
        files.push(path);
      }
      const status: MachineStatus = {
        id: spec.id,
        name: spec.name,
        driver: 'export',
        state: 'created',
        accel: null,
        copyPercent: 100,
        independent: true,
        forwardedPorts: {},
        files,
        createdAt: (this.options.now ?? (() => new Date()))().toISOString(),
      };
      await writeMachineRecord(this.options.stateDir, {
        version: 1,
        spec: recordedSpec(spec),
        status,
        driver: { format: this.format },
      });
      return status;
    } catch (err) {
      await removeMachineDir(this.options.stateDir, spec.id);
      throw err;
    }
  }

  /** Nothing to serve: the files were complete at create. */
  async adopt(id: string, _disks: readonly MachineDiskSpec[]): Promise<MachineStatus> {
    return this.status(id);
  }

  async start(id: string): Promise<MachineStatus> {
    const status = await this.status(id);
    throw new LifeboatError(
      'UNSUPPORTED',
      `the export driver boots nothing: import the disk images of machine ${id} into a hypervisor (${status.files.join(', ')})`,
      { details: { id, files: status.files } },
    );
  }

  /** Nothing runs: the status as it is. */
  async stop(id: string): Promise<MachineStatus> {
    return this.status(id);
  }

  async destroy(id: string): Promise<void> {
    await removeMachineDir(this.options.stateDir, id);
  }

  async status(id: string): Promise<MachineStatus> {
    return (await readMachineRecord(this.options.stateDir, id)).status;
  }

  async list(): Promise<MachineStatus[]> {
    const out: MachineStatus[] = [];
    for (const id of await listMachineIds(this.options.stateDir)) {
      const record = await readMachineRecord(this.options.stateDir, id).catch(() => undefined); // destroyed meanwhile
      if (record) out.push(record.status);
    }
    return out;
  }

  async waitIndependent(id: string): Promise<MachineStatus> {
    return this.status(id);
  }

  /** No console: nothing ever ran. */
  async console(id: string): Promise<string> {
    await this.status(id);
    return '';
  }

  async waitForConsole(id: string): Promise<{ line: string; atMs: number }> {
    await this.status(id);
    throw new LifeboatError('UNSUPPORTED', `the export driver boots nothing, so machine ${id} prints nothing`);
  }

  async runInGuest(id: string): Promise<GuestCommandResult> {
    await this.status(id);
    throw new LifeboatError('UNSUPPORTED', `the export driver boots nothing, so machine ${id} runs no commands`);
  }

  /** The exported image, read through qemu-nbd for formats other than raw. */
  async readDisk(id: string, disk: string): Promise<BlockSource> {
    const record = await readMachineRecord(this.options.stateDir, id);
    if (!record.spec.disks.some((d) => d.name === disk)) throw new LifeboatError('NOT_FOUND', `machine ${id} has no disk ${disk}`);
    const format = (record.driver['format'] as ImageFormat | undefined) ?? 'qcow2';
    const path = join(machineDir(this.options.stateDir, id), `${disk}.${EXTENSIONS[format]}`);
    if (format === 'raw') return DiskFile.open(path);
    return openImageFile({ path, format: format === 'qcow2' ? 'qcow2' : 'vpc', socketDir: machineDir(this.options.stateDir, id), name: disk });
  }

  async openChanges(id: string): Promise<ChangeTracker> {
    checkId(id);
    await this.status(id);
    throw new LifeboatError('UNSUPPORTED', 'the export driver does not track changes: nothing runs to write');
  }
}
