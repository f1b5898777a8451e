import { join } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import type { TrackerDeps, TrackerSpec } from '../registry.js';
import type { ChangeTracker } from '../tracker.js';
import { openQemuTracker } from './qemu-tracker.js';

export { openQemuTracker } from './qemu-tracker.js';
export type { QemuTrackerOptions } from './qemu-tracker.js';
export { QmpClient } from './qmp.js';
export type { QmpEvent } from './qmp.js';

/**
 * The registry's builder for `kind: qemu`. Spec: `qmpSocket` and `node`
 * (required), `workDir` (default `<stateDir>/qemu-work`) and `nbdSocket`
 * (default `<stateDir>/qemu-nbd.sock`). Missing or malformed options are
 * CONFIG_INVALID.
 */
export function qemuTrackerFromSpec(spec: TrackerSpec, deps: TrackerDeps): Promise<ChangeTracker> {
  const text = (key: string, fallback?: string): string => {
    const value = spec[key] ?? fallback;
    if (typeof value !== 'string' || value.length === 0) {
      throw new LifeboatError('CONFIG_INVALID', `tracker qemu: ${key} is required`, { details: { kind: 'qemu', option: key } });
    }
    return value;
  };
  return openQemuTracker({
    qmpSocket: text('qmpSocket'),
    node: text('node'),
    workDir: text('workDir', join(deps.stateDir, 'qemu-work')),
    nbdSocket: text('nbdSocket', join(deps.stateDir, 'qemu-nbd.sock')),
    stateDir: deps.stateDir,
    clock: deps.clock,
    replicaIsEmpty: deps.replicaIsEmpty,
  });
}
