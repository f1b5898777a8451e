/**
 * The compute contract: one shape for every way Lifeboat turns recovery points
 * into a machine (docs/recovery.md, "Compute drivers"). Drivers:
 * `qemu` (boots the disks on this host: KVM when a guest really runs under it,
 * software emulation otherwise), `export` (writes the disks as raw / qcow2 / VHD
 * files for an operator to import elsewhere), and `fake` (in memory, unit tests).
 *
 * Contract, checked by test/compute/contract.ts for every driver:
 * - `create()` prepares a machine from its disks' sources without copying them
 *   first when the driver can (`instantServe`): the qemu driver puts a local qcow2
 *   overlay over an NBD export of each source, so a machine of any size starts in
 *   seconds; a background copy (`copyPercent`) then makes it independent of the
 *   sources (`independent: true`), after which the sources may be closed.
 *   A source is only ever read, never written.
 * - `start()` powers the machine on; `stop()` powers it off (graceful first when
 *   asked, then hard after `timeoutMs`); both are idempotent.
 * - `destroy()` removes everything `create()` made (processes, sockets, overlays,
 *   files); it is idempotent and leaves nothing behind that `list()` would show.
 * - `list()` shows every machine the driver holds, from its state directory, so
 *   a vault restart finds machines it created before (`adopt()` serves the
 *   sources again to a machine still depending on them).
 * - The isolated network has no route to any other network: the guest reaches
 *   nothing, and only the ports in `forwardPorts` are reachable, from loopback.
 * - Console output is captured from the first byte (`console()`), capped.
 * - Names: machine ids match MACHINE_ID; errors carry stable codes
 *   (COMPUTE_UNAVAILABLE, COMPUTE_FAILED, NOT_FOUND, TIMEOUT, UNSUPPORTED).
 */
import type { BlockSource } from '../core/block-source.js';
import type { ChangeTracker } from '../changetracking/tracker.js';

export type ComputeDriverName = 'qemu' | 'export' | 'fake';

/** Machine ids: what the vault names a recovered machine (`<purpose>-<itemId>` or similar). */
export const MACHINE_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * Where a recovered machine's network card is plugged.
 * - `isolated`: a network with no route to anything (QEMU user networking with
 *   `restrict=on`): test failovers; probes reach it only through `forwardPorts`.
 * - `none`: no network card.
 * - `user`: NAT to the host's networks (QEMU user networking).
 * - `bridge`: a tap on an existing host bridge (the production / recovery network).
 * - `tap`: an existing tap interface.
 */
export type NetworkSpec =
  | { readonly kind: 'isolated' }
  | { readonly kind: 'none' }
  | { readonly kind: 'user' }
  | { readonly kind: 'bridge'; readonly bridge: string }
  | { readonly kind: 'tap'; readonly ifname: string };

export interface MachineDiskSpec {
  /** The disk's name on the protected machine (e.g. "root", "data"). */
  readonly name: string;
  /** The recovery point's content (a PointReader); read only. */
  readonly source: BlockSource;
}

export interface MachineSpec {
  readonly id: string;
  /** The operator's name for the machine (the item's compute targetName). */
  readonly name: string;
  /** Default 512. */
  readonly memoryMiB?: number;
  /** Default 1. */
  readonly cpus?: number;
  /** In boot order: the first disk boots. */
  readonly disks: readonly MachineDiskSpec[];
  readonly network: NetworkSpec;
  /** Guest TCP ports reachable from the host's loopback (for probes); see MachineStatus.forwardedPorts. */
  readonly forwardPorts?: readonly number[];
  /**
   * Track the blocks the guest writes from its first boot on (QEMU: a dirty bitmap
   * per disk), so reprotect ships only what changed since the recovery point.
   */
  readonly trackChanges?: boolean;
}

export type MachineState = 'created' | 'running' | 'stopped';

export interface MachineStatus {
  readonly id: string;
  readonly name: string;
  readonly driver: ComputeDriverName;
  readonly state: MachineState;
  /** How the guest runs: hardware virtualization, software emulation, or not at all (export). */
  readonly accel: 'kvm' | 'tcg' | null;
  /** 0..100: how much of the sources the background copy has made local. */
  readonly copyPercent: number;
  /** True once nothing is read from the sources any more. */
  readonly independent: boolean;
  /** Guest port → loopback port on the host. */
  readonly forwardedPorts: Readonly<Record<string, number>>;
  /** Files the machine consists of (overlays, exported images), for the operator. */
  readonly files: readonly string[];
  readonly createdAt: string;
}

export interface DriverCapabilities {
  /** Boots the machine (qemu, fake) rather than writing files (export). */
  readonly boots: boolean;
  /** Starts without copying the sources first. */
  readonly instantServe: boolean;
  /** Can run a command in the guest (serial console shell). */
  readonly guestCommands: boolean;
  /** openChanges() works (trackChanges honoured). */
  readonly changeTracking: boolean;
}

export interface DriverProbe {
  readonly available: boolean;
  /** Why not, when not available (a missing package, no permission...). */
  readonly reason: string | null;
  /**
   * What a started guest would run under (decided by trying, never from /dev/kvm's
   * existence alone); null while undecided (qemu: before its first boot) or when
   * nothing boots (export).
   */
  readonly accel: 'kvm' | 'tcg' | null;
}

export interface GuestCommandResult {
  readonly exitCode: number;
  readonly output: string;
}

export interface ComputeDriver {
  readonly name: ComputeDriverName;
  readonly capabilities: DriverCapabilities;
  probe(): Promise<DriverProbe>;
  /** CONFLICT when the id exists; the sources are read, never written. */
  create(spec: MachineSpec, options?: { signal?: AbortSignal }): Promise<MachineStatus>;
  /** Serves the sources again to a machine created by an earlier process that still depends on them. */
  adopt(id: string, disks: readonly MachineDiskSpec[]): Promise<MachineStatus>;
  start(id: string, options?: { signal?: AbortSignal }): Promise<MachineStatus>;
  stop(id: string, options?: { graceful?: boolean; timeoutMs?: number }): Promise<MachineStatus>;
  destroy(id: string): Promise<void>;
  status(id: string): Promise<MachineStatus>;
  list(): Promise<MachineStatus[]>;
  /** Resolves once the background copy is done (independent), rejects on abort. */
  waitIndependent(id: string, options?: { signal?: AbortSignal; onProgress?: (percent: number) => void }): Promise<MachineStatus>;
  /** The console output so far (the last `maxBytes`, default 1 MiB). */
  console(id: string, maxBytes?: number): Promise<string>;
  /**
   * Resolves with the first console line matching `pattern` (already printed or
   * still to come) and when it was seen; TIMEOUT after timeoutMs, COMPUTE_FAILED
   * when the machine stops first (with the console's tail in the message).
   */
  waitForConsole(id: string, pattern: RegExp, options: { timeoutMs: number; signal?: AbortSignal }): Promise<{ line: string; atMs: number }>;
  /** Runs a shell command in the guest (UNSUPPORTED without guestCommands). */
  runInGuest(id: string, command: string, options: { timeoutMs: number; signal?: AbortSignal }): Promise<GuestCommandResult>;
  /** A read-only view of the machine's disk as it is now (the guest should be stopped for a stable view). */
  readDisk(id: string, disk: string): Promise<BlockSource>;
  /** The blocks the guest wrote since it was created (UNSUPPORTED without changeTracking or trackChanges). */
  openChanges(id: string, disk: string): Promise<ChangeTracker>;
  /**
   * For a process shutting down: lets go of every machine without stopping it
   * (qemu: the sources' NBD servers and QMP connections close, QEMU runs on until a
   * later driver adopts it). Drivers that hold nothing while idle omit it.
   */
  release?(): Promise<void>;
}
