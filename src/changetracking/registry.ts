import { LifeboatError } from '../core/errors.js';
import { ScanTracker } from './scan/scan-tracker.js';
import type { ChangeTracker, TrackerKind } from './tracker.js';

/**
 * The one place change-tracking drivers are registered (STYLE.md, "Drivers").
 * The agent builds each disk's tracker from its configuration with
 * openTracker(); a kind that is unknown, not registered, or misconfigured
 * throws CONFIG_INVALID and stops start-up (never log-and-skip).
 */

/** A disk's tracker configuration; `kind` picks the driver, the rest is the driver's. */
export interface TrackerSpec {
  readonly kind: string;
  /** The disk: image file or block device (scan), or what the driver documents. */
  readonly path?: string;
  readonly [option: string]: unknown;
}

/** What the agent passes every driver. */
export interface TrackerDeps {
  /** The agent's state directory for this disk (the digest map and driver state live here). */
  readonly stateDir: string;
  /** Capture time of cuts, ms since the epoch. */
  readonly clock: () => number;
  /**
   * True when the replica is a new, all-zero disk (the disk's first start after
   * enrollment): with no digest map yet, zero chunks need not be shipped.
   * False when the replica may hold data the agent has no map of (state lost):
   * then every chunk is reported once.
   */
  readonly replicaIsEmpty: boolean;
}

type TrackerBuilder = (spec: TrackerSpec, deps: TrackerDeps) => ChangeTracker | Promise<ChangeTracker>;

function invalid(spec: TrackerSpec, message: string): LifeboatError {
  return new LifeboatError('CONFIG_INVALID', `tracker ${spec.kind}: ${message}`, { details: { kind: spec.kind } });
}

function requirePath(spec: TrackerSpec): string {
  if (typeof spec.path !== 'string' || spec.path.length === 0) throw invalid(spec, 'path (the image file or block device) is required');
  return spec.path;
}

function builders(): ReadonlyMap<TrackerKind, TrackerBuilder> {
  const m = new Map<TrackerKind, TrackerBuilder>();
  m.set('scan', (spec, deps) => new ScanTracker({ path: requirePath(spec), stateDir: deps.stateDir, clock: deps.clock, replicaIsEmpty: deps.replicaIsEmpty }));
  m.set('journal', async (spec, deps) => (await import('./journal/index.js')).journalTrackerFromSpec(spec, deps));
  m.set('qemu', async (spec, deps) => (await import('./qemu/index.js')).qemuTrackerFromSpec(spec, deps));
  return m;
}

const KINDS: readonly TrackerKind[] = ['scan', 'journal', 'qemu'];

/** Builds (does not open) the tracker `spec` names. */
export async function openTracker(spec: TrackerSpec, deps: TrackerDeps): Promise<ChangeTracker> {
  if (!KINDS.includes(spec.kind as TrackerKind)) {
    throw invalid(spec, `unknown tracker kind; one of ${KINDS.join(', ')}`);
  }
  const build = builders().get(spec.kind as TrackerKind);
  if (!build) throw invalid(spec, 'this driver is not available in this build');
  return build(spec, deps);
}
