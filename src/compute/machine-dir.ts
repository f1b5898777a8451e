/**
 * A machine's state directory, shared by the drivers that keep machines on
 * disk (qemu, export): `<stateDir>/<id>/` (0700) holds `machine.json` (the spec
 * without its sources, and the status) next to the driver's own files. The
 * directory is the machine: `list()` is a directory listing, so a vault restart
 * finds every machine an earlier process created.
 *
 * Contracts:
 * - `createMachineDir` is the one place that decides CONFLICT: mkdir of the
 *   machine's directory either creates it or fails because it exists.
 * - `machine.json` is written atomically (temp, fsync, rename); a directory
 *   without it (a crash inside create) is not a machine and is removed by
 *   `destroy`.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LifeboatError } from '../core/errors.js';
import { writeFileDurable } from '../io/durable.js';
import { MACHINE_ID, type MachineSpec, type MachineStatus, type NetworkSpec } from './driver.js';

/** Disk names become file names (`<disk>.qcow2`) and NBD export names. */
export const DISK_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

const MACHINE_FILE = 'machine.json';

/** What machine.json holds: everything of the spec but the sources, and the last status written. */
export interface MachineRecord {
  readonly version: 1;
  readonly spec: {
    readonly id: string;
    readonly name: string;
    readonly memoryMiB: number;
    readonly cpus: number;
    readonly disks: readonly { readonly name: string; readonly sizeBytes: number }[];
    readonly network: NetworkSpec;
    readonly forwardPorts: readonly number[];
    readonly trackChanges: boolean;
  };
  readonly status: MachineStatus;
  /** Driver-specific state (the qemu driver's ports, pid, accel...). */
  readonly driver: Readonly<Record<string, unknown>>;
}

/** The spec as machine.json keeps it: the sources' sizes instead of the sources, defaults filled in. */
export function recordedSpec(spec: MachineSpec): MachineRecord['spec'] {
  return {
    id: spec.id,
    name: spec.name,
    memoryMiB: spec.memoryMiB ?? 512,
    cpus: spec.cpus ?? 1,
    disks: spec.disks.map((d) => ({ name: d.name, sizeBytes: d.source.sizeBytes })),
    network: spec.network,
    forwardPorts: spec.forwardPorts ?? [],
    trackChanges: spec.trackChanges === true,
  };
}

/** VALIDATION unless the id, the disk names and the sizes are usable. */
export function checkSpec(spec: MachineSpec): void {
  if (!MACHINE_ID.test(spec.id)) throw new LifeboatError('VALIDATION', `machine id ${JSON.stringify(spec.id)} must match ${MACHINE_ID}`);
  if (spec.disks.length === 0) throw new LifeboatError('VALIDATION', 'a machine needs at least one disk');
  const seen = new Set<string>();
  for (const d of spec.disks) {
    if (!DISK_NAME.test(d.name)) throw new LifeboatError('VALIDATION', `disk name ${JSON.stringify(d.name)} must match ${DISK_NAME}`);
    if (seen.has(d.name)) throw new LifeboatError('VALIDATION', `disk name ${d.name} appears twice`);
    seen.add(d.name);
    if (!Number.isSafeInteger(d.source.sizeBytes) || d.source.sizeBytes <= 0 || d.source.sizeBytes % 512 !== 0) {
      throw new LifeboatError('VALIDATION', `disk ${d.name}: size ${d.source.sizeBytes} is not a positive multiple of 512`);
    }
  }
  for (const [key, value, min, max] of [
    ['memoryMiB', spec.memoryMiB, 64, 1024 * 1024],
    ['cpus', spec.cpus, 1, 256],
  ] as const) {
    if (value !== undefined && (!Number.isInteger(value) || value < min || value > max)) {
      throw new LifeboatError('VALIDATION', `${key} must be an integer in [${min}, ${max}]: ${value}`);
    }
  }
  for (const port of spec.forwardPorts ?? []) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new LifeboatError('VALIDATION', `forward port ${port} is not a TCP port`);
  }
}

export function checkId(id: string): void {
  if (!MACHINE_ID.test(id)) throw new LifeboatError('NOT_FOUND', `no machine ${JSON.stringify(id)}`);
}

export function machineDir(stateDir: string, id: string): string {
  return join(stateDir, id);
}

/** Creates the machine's directory (0700); CONFLICT when it exists. */
export async function createMachineDir(stateDir: string, id: string): Promise<string> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const dir = machineDir(stateDir, id);
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new LifeboatError('CONFLICT', `machine ${id} exists`, { details: { id } });
    throw new LifeboatError('COMPUTE_FAILED', `cannot create the state directory of machine ${id}: ${String(err)}`, { cause: err });
  }
  return dir;
}

export async function writeMachineRecord(stateDir: string, record: MachineRecord): Promise<void> {
  await writeFileDurable(machineDir(stateDir, record.spec.id), MACHINE_FILE, `${JSON.stringify(record, null, 2)}\n`);
}

/** The machine's record; NOT_FOUND when there is none. */
export async function readMachineRecord(stateDir: string, id: string): Promise<MachineRecord> {
  checkId(id);
  let text: string;
  try {
    text = await readFile(join(machineDir(stateDir, id), MACHINE_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LifeboatError('NOT_FOUND', `no machine ${id}`, { details: { id } });
    throw err;
  }
  return JSON.parse(text) as MachineRecord;
}

/** Ids of every machine with a record, sorted. */
export async function listMachineIds(stateDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(stateDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const ids: string[] = [];
  for (const name of names.sort()) {
    if (!MACHINE_ID.test(name)) continue;
    try {
      await readFile(join(stateDir, name, MACHINE_FILE));
      ids.push(name);
    } catch {
      // No record: a create that crashed half-way, not a machine (destroy removes it).
    }
  }
  return ids;
}

/** Removes the machine's directory; idempotent. */
export async function removeMachineDir(stateDir: string, id: string): Promise<void> {
  if (!MACHINE_ID.test(id)) return;
  await rm(machineDir(stateDir, id), { recursive: true, force: true });
}
