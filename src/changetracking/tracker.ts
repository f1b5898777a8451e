/**
 * The change-tracking contract: one shape for every way the agent learns what
 * changed on a disk (docs/replication.md, "Change tracking"). Drivers:
 * `scan` (read and compare against the digest map, any file or block device),
 * `journal` (the agent sits in the write path and logs every write),
 * `qemu` (a QEMU dirty bitmap and a point-in-time view over NBD).
 *
 * Contract, checked by test/changetracking/contract.ts for every driver:
 * - `open()` says whether the tracker can vouch for every write since the last
 *   committed cut (`continuous`) or not (`lost`, with a reason: first start,
 *   unclean reboot, bitmap inconsistent...). After `lost`, the next cut MUST be
 *   a full digest compare (it reports every chunk whose content differs from
 *   the digest map), never a silently trusted incremental.
 * - `cut()` freezes one consistent moment of the disk (point-in-time where the
 *   capability says so) and reports the extents changed since the previous
 *   committed cut, with their data as of that moment. Writes made after cut()
 *   returns belong to the next cut. Without `pointInTime` (scan), the disk is
 *   read while changes() is iterated: a write made before an extent is read
 *   may show in it already (and is then not reported again); writes made after
 *   changes() ends always belong to the next cut.
 * - A cut is either committed (its changes are durably shipped: the tracker may
 *   forget them and the digest map now holds them) or aborted (every change it
 *   reported is reported again by the next cut, possibly merged with newer
 *   writes). A process killed between cut() and commit() behaves as aborted,
 *   except that a driver which staged the cut durably reports it from the next
 *   `open()` as `pendingCutId`; the agent then calls `settle(id, 'commit')` when
 *   the cut's last segment was acknowledged, `settle(id, 'abort')` otherwise
 *   (docs/replication.md, "Agent: cuts, sequences and restarts"). A cut()
 *   taken while a cut is still pending aborts it.
 * - At most one cut is open at a time (CONFLICT otherwise).
 * - `close()` releases what the tracker holds; it is idempotent.
 */

export type TrackerKind = 'scan' | 'journal' | 'qemu';

export interface TrackerCapabilities {
  /** The cut shows one moment of the disk even while it is being written. */
  readonly pointInTime: boolean;
  /** Extents are the written ranges (rounded to at most the chunk size), not every chunk that was compared. */
  readonly exactExtents: boolean;
}

export interface ChangedExtent {
  /** Byte offset, a multiple of 4096 unless it is the disk's last partial block. */
  readonly offset: number;
  /** The bytes at `offset` as of the cut; length ≤ 16 MiB. */
  readonly data: Buffer;
}

export interface Cut {
  /**
   * Names the cut across restarts (the agent keeps it as `inFlight.cutId`):
   * 1 to 64 characters of [A-Za-z0-9_-], unique per tracker state.
   */
  readonly id: string;
  /** The disk's size at the cut. */
  readonly sizeBytes: number;
  /** When the moment was frozen (the tracker's clock, ms since the epoch). */
  readonly capturedAtMs: number;
  /** True when this cut compares every chunk (first cut, or after continuity was lost). */
  readonly full: boolean;
  /**
   * The changed extents in ascending offset order, not overlapping, each read as
   * of the cut. May be iterated once. Ranges of the disk that are zero now but
   * were not before are reported with zero data.
   */
  changes(): AsyncIterable<ChangedExtent>;
  /** Estimated bytes changes() will yield (for progress); exact when known. */
  readonly estimatedBytes: number;
  /** The changes are durably shipped: forget them. Idempotent. */
  commit(): Promise<void>;
  /** The changes were not shipped: report them again next time. Idempotent. */
  abort(): Promise<void>;
}

export interface TrackerOpenResult {
  readonly continuity: 'continuous' | 'lost';
  readonly reason?: string;
  /** A cut staged before the previous process ended, neither committed nor aborted: settle it before the next cut. */
  readonly pendingCutId?: string;
}

export interface ChangeTracker {
  readonly kind: TrackerKind;
  readonly capabilities: TrackerCapabilities;
  open(): Promise<TrackerOpenResult>;
  cut(): Promise<Cut>;
  /**
   * Commits or aborts the cut `open()` reported as pending. Idempotent; an id
   * the tracker does not hold (settled already, never staged) is a no-op. A
   * driver that cannot keep a staged cut across restarts never reports one, so
   * its interrupted cut behaves as aborted whatever the agent settles.
   */
  settle(cutId: string, outcome: 'commit' | 'abort'): Promise<void>;
  close(): Promise<void>;
}
