/**
 * Picks a compute driver by name (docs/recovery.md, "Compute drivers"):
 * `qemu` boots recovered machines on this host, `export` writes their disks as
 * image files, `auto` is qemu when QEMU is installed and export otherwise.
 * The fake is for unit tests and is never picked here.
 */
import type { ImageFormat } from '../export/index.js';
import type { ComputeDriver } from './driver.js';
import { ExportComputeDriver } from './export.js';
import { QemuComputeDriver } from './qemu/driver.js';
import { findOnPath } from './qemu/process.js';
import { shortStateDir } from './qemu/short-path.js';

export type { ComputeDriver } from './driver.js';
export { ExportComputeDriver } from './export.js';
export { QemuComputeDriver } from './qemu/driver.js';

export interface ComputeDriverOptions {
  /** Where the driver keeps its machines (overlays, sockets, console logs, exported images); created 0700. */
  readonly stateDir: string;
  /** The export driver's image format; default qcow2. */
  readonly exportFormat?: ImageFormat;
}

/** Creating a driver is cheap and probes nothing: whether KVM works is found out by trying, at the first boot. */
export async function createComputeDriver(name: 'qemu' | 'export' | 'auto', options: ComputeDriverOptions): Promise<ComputeDriver> {
  const qemu = name === 'qemu' || (name === 'auto' && findOnPath('qemu-system-x86_64') !== undefined && findOnPath('qemu-img') !== undefined);
  // A qemu driver without QEMU installed is still returned: probe() names the packages, create() fails with COMPUTE_UNAVAILABLE.
  // QEMU's sockets live in the machines' directories: a long state directory is reached through a short link.
  if (qemu) return new QemuComputeDriver({ stateDir: await shortStateDir(options.stateDir) });
  return new ExportComputeDriver({ stateDir: options.stateDir, format: options.exportFormat });
}
