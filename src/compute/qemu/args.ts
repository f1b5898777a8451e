/**
 * The QEMU command line of a machine (docs/recovery.md, "Compute drivers"):
 * each disk is a qcow2 overlay (`<disk>.qcow2`) whose backing is the NBD
 * export of its recovery point on `nbd.sock`, attached as NVMe (the first one
 * boots); the serial console on `serial.sock` with everything logged to
 * `console.log`; two QMP monitors (`qmp.sock` for the driver, `qmp-changes.sock`
 * for the change trackers, since a QMP socket takes one client at a time).
 */
import { join } from 'node:path';
import type { NetworkSpec } from '../driver.js';
import type { Accel } from './accel.js';

/** Seconds QEMU's NBD client keeps retrying a lost connection to the sources (a vault restart) before failing requests. */
export const NBD_RECONNECT_DELAY_S = 300;

export const FILES = {
  machine: 'machine.json',
  qmp: 'qmp.sock',
  qmpChanges: 'qmp-changes.sock',
  serial: 'serial.sock',
  console: 'console.log',
  pid: 'qemu.pid',
  nbd: 'nbd.sock',
  /** QEMU's own NBD server (readDisk, change-tracking views). */
  exports: 'exports.sock',
} as const;

/** The change-tracking QMP socket of the disk at `index` (the first keeps the name it always had). */
export function qmpChangesFile(index: number): string {
  return index === 0 ? FILES.qmpChanges : `qmp-changes-${index}.sock`;
}

export interface DiskLayout {
  readonly name: string;
  readonly sizeBytes: number;
}

export interface QemuArgsInput {
  readonly dir: string;
  readonly id: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly disks: readonly DiskLayout[];
  readonly accel: Accel;
  readonly network: NetworkSpec;
  /** Guest port → host loopback port. */
  readonly forwardedPorts: Readonly<Record<string, number>>;
  /** Read the source directly for these disks (the copy finished): no NBD backing. */
  readonly independentDisks: ReadonlySet<string>;
}

export function srcNode(index: number): string {
  return `src-${index}`;
}

export function diskNode(index: number): string {
  return `disk-${index}`;
}

export function overlayPath(dir: string, disk: string): string {
  return join(dir, `${disk}.qcow2`);
}

/** `kind,key=value,...` (a chardev or netdev backend and its options). */
function typed(kind: string, values: Record<string, string | number>): string {
  return `${kind},${opts(values)}`;
}

/** QEMU's `key=value,...` syntax: commas in values are doubled. */
function opts(values: Record<string, string | number>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k}=${String(v).replaceAll(',', ',,')}`)
    .join(',');
}

export function accelArgs(accel: Accel, cpus: number): string[] {
  if (accel === 'kvm') return ['-accel', 'kvm', '-cpu', 'host'];
  return ['-accel', cpus > 1 ? 'tcg,thread=multi' : 'tcg'];
}

export function diskArgs(dir: string, disks: readonly DiskLayout[], independent: ReadonlySet<string>, overlayOf: (disk: string) => string): string[] {
  const args: string[] = [];
  disks.forEach((disk, i) => {
    const qcow2: Record<string, string | number> = { driver: 'qcow2', 'node-name': diskNode(i), file: `file-${i}` };
    if (!independent.has(disk.name)) {
      args.push(
        '-blockdev',
        opts({
          driver: 'nbd',
          'node-name': srcNode(i),
          'server.type': 'unix',
          'server.path': join(dir, FILES.nbd),
          export: disk.name,
          'read-only': 'on',
          'reconnect-delay': NBD_RECONNECT_DELAY_S,
        }),
      );
      qcow2['backing'] = srcNode(i);
    }
    args.push('-blockdev', opts({ driver: 'file', 'node-name': `file-${i}`, filename: overlayOf(disk.name) }));
    args.push('-blockdev', opts(qcow2));
    // NVMe serials are at most 20 bytes.
    const device: Record<string, string | number> = { drive: diskNode(i), serial: disk.name.slice(0, 20) };
    if (i === 0) device['bootindex'] = 0;
    args.push('-device', `nvme,${opts(device)}`);
  });
  return args;
}

export function networkArgs(network: NetworkSpec, forwardedPorts: Readonly<Record<string, number>>): string[] {
  const forwards = Object.entries(forwardedPorts).map(([guest, host]) => `hostfwd=tcp:127.0.0.1:${host}-:${guest}`);
  const nic = ['-device', 'virtio-net-pci,netdev=n0'];
  switch (network.kind) {
    case 'none':
      return ['-nic', 'none'];
    case 'isolated':
      return ['-netdev', ['user', 'id=n0', 'restrict=on', ...forwards].join(','), ...nic];
    case 'user':
      return ['-netdev', ['user', 'id=n0', ...forwards].join(','), ...nic];
    case 'bridge':
      return ['-netdev', typed('bridge', { id: 'n0', br: network.bridge }), ...nic];
    case 'tap':
      return ['-netdev', typed('tap', { id: 'n0', ifname: network.ifname, script: 'no', downscript: 'no' }), ...nic];
  }
}

/** The full command line of the machine, started paused (-S) and detached. */
export function qemuArgs(input: QemuArgsInput): string[] {
  const { dir } = input;
  return [
    '-name',
    `lifeboat-${input.id}`,
    '-machine',
    'pc',
    ...accelArgs(input.accel, input.cpus),
    '-m',
    String(input.memoryMiB),
    '-smp',
    String(input.cpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-S',
    '-daemonize',
    '-pidfile',
    join(dir, FILES.pid),
    '-chardev',
    typed('socket', { id: 'qmp0', path: join(dir, FILES.qmp), server: 'on', wait: 'off' }),
    '-mon',
    'chardev=qmp0,mode=control',
    // One change-tracking monitor per disk: a QMP socket serves one client at a time, and each disk has its own tracker.
    ...input.disks.flatMap((_, i) => [
      '-chardev',
      typed('socket', { id: `qmp${i + 1}`, path: join(dir, qmpChangesFile(i)), server: 'on', wait: 'off' }),
      '-mon',
      `chardev=qmp${i + 1},mode=control`,
    ]),
    '-chardev',
    typed('socket', { id: 'ser0', path: join(dir, FILES.serial), server: 'on', wait: 'off', logfile: join(dir, FILES.console), logappend: 'on' }),
    '-serial',
    'chardev:ser0',
    ...diskArgs(dir, input.disks, input.independentDisks, (disk) => overlayPath(dir, disk)),
    ...networkArgs(input.network, input.forwardedPorts),
  ];
}
