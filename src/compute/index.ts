/**
 * Picks a compute driver by name (docs/recovery.md, "Compute drivers"):
 * `qemu` boots recovered machines on this host, `export` writes their disks as
 * image files, `auto` is qemu when QEMU is installed and export otherwise.
 * The fake is for unit tests and is never picked here.
 */
import { LifeboatError } from '../core/errors.js';
import type { ComputeDriver } from './driver.js';

export type { ComputeDriver } from './driver.js';

export interface ComputeDriverOptions {
  /** Where the driver keeps its machines (overlays, sockets, console logs, exported images); created 0700. */
  readonly stateDir: string;
}

/** Creating a driver is cheap and probes nothing: whether KVM works is found out by trying, at the first boot. */
export async function createComputeDriver(name: 'qemu' | 'export' | 'auto', _options: ComputeDriverOptions): Promise<ComputeDriver> {
  const unavailable = (): never => {
    throw new LifeboatError('COMPUTE_UNAVAILABLE', `the ${name} compute driver is not built yet`);
  };
  return {
    name: 'export',
    capabilities: { boots: false, instantServe: false, guestCommands: false, changeTracking: false },
    probe: async () => ({ available: false, reason: 'not built yet', accel: null }),
    create: unavailable,
    adopt: unavailable,
    start: unavailable,
    stop: unavailable,
    destroy: unavailable,
    status: unavailable,
    list: async () => [],
    waitIndependent: unavailable,
    console: unavailable,
    waitForConsole: unavailable,
    runInGuest: unavailable,
    readDisk: unavailable,
    openChanges: unavailable,
  };
}
