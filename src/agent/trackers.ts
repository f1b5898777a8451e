import { join } from 'node:path';
import { openTracker } from '../changetracking/registry.js';
import type { ChangeTracker } from '../changetracking/tracker.js';
import type { DiskSpec } from './config.js';
import type { StateDir } from './state.js';

/**
 * Builds each disk's tracker through the change-tracking registry; the driver
 * keeps its state (digest map, logs) in `<stateDir>/disks/<name>/tracker`.
 * A disk the agent has never replicated (no state.json yet) has an all-zero
 * replica, so its first full compare may skip zero chunks.
 */
export function registryTrackers(state: StateDir, clock: () => number = Date.now): (disk: DiskSpec) => Promise<ChangeTracker> {
  return async (disk) =>
    openTracker(disk.tracker, {
      stateDir: join(state.path, 'disks', disk.name, 'tracker'),
      clock,
      replicaIsEmpty: state.diskState(disk.name) === undefined,
    });
}
