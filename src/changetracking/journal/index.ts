import { LifeboatError } from '../../core/errors.js';
import type { NbdLogger } from '../../nbd/log.js';
import { startNbdServer } from '../../nbd/server.js';
import type { NbdAddress, NbdListen, NbdServer } from '../../nbd/server.js';
import type { TrackerDeps, TrackerSpec } from '../registry.js';
import type { ChangeTracker, Cut, TrackerCapabilities, TrackerOpenResult } from '../tracker.js';
import { JournalTracker } from './journal-tracker.js';
import type { JournalTrackerOptions } from './journal-tracker.js';

export { JournalTracker } from './journal-tracker.js';
export type { JournalTrackerOptions } from './journal-tracker.js';

export interface OpenJournalTrackerOptions extends JournalTrackerOptions {
  /** Where the disk's user (QEMU, nbdfuse, fio) connects: a Unix socket, or TCP (default 127.0.0.1, port 0 = any). */
  readonly listen: NbdListen;
  /** The NBD export name; default 'disk'. */
  readonly exportName?: string;
  readonly logger?: NbdLogger;
}

/**
 * The journal tracker together with the NBD export its disk's user writes
 * through. open() recovers the tracker's state first and only then starts
 * serving, so no write is accepted before recovery is complete; close() hangs
 * up on the users (waiting for their requests in flight) and then closes the
 * tracker cleanly.
 */
export class ServedJournalTracker implements ChangeTracker {
  readonly kind = 'journal' as const;
  readonly capabilities: TrackerCapabilities;
  readonly journal: JournalTracker;
  private server: NbdServer | null = null;
  private opening: Promise<TrackerOpenResult> | null = null;
  private closing: Promise<void> | null = null;

  constructor(private readonly options: OpenJournalTrackerOptions) {
    this.journal = new JournalTracker(options);
    this.capabilities = this.journal.capabilities;
  }

  /** Idempotent; rejects with TRACKER_FAILED or CONFIG_INVALID (address not bindable), leaving nothing open. */
  open(): Promise<TrackerOpenResult> {
    this.opening ??= (async () => {
      const opened = await this.journal.open();
      const exportName = this.options.exportName ?? 'disk';
      try {
        this.server = await startNbdServer({
          exports: { [exportName]: this.journal.target },
          listen: this.options.listen,
          ...(this.options.logger === undefined ? {} : { logger: this.options.logger }),
        });
      } catch (err) {
        await this.journal.close();
        throw err;
      }
      return opened;
    })();
    return this.opening;
  }

  /** Where the export listens; after open(). */
  get address(): NbdAddress {
    return this.serving().address;
  }

  /** `nbd+unix:///disk?socket=...` or `nbd://host:port/disk`, as qemu, libnbd and fio accept it; after open(). */
  get uri(): string {
    return this.serving().uri(this.options.exportName ?? 'disk');
  }

  cut(): Promise<Cut> {
    return this.journal.cut();
  }

  settle(cutId: string, outcome: 'commit' | 'abort'): Promise<void> {
    return this.journal.settle(cutId, outcome);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.server?.close();
      await this.journal.close();
    })();
    return this.closing;
  }

  private serving(): NbdServer {
    if (this.server === null) throw new LifeboatError('INTERNAL', 'the journal export is not serving before open()');
    return this.server;
  }
}

export interface JournalTrackerHandle {
  /** Already opened: tracker.open() returns `opened` again. */
  readonly tracker: ServedJournalTracker;
  readonly opened: TrackerOpenResult;
  readonly address: NbdAddress;
  readonly uri: string;
  /** Hangs up on the disk's users, then closes the tracker cleanly. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts the journal tracker for one disk and serves the image as a writable
 * NBD export whose every write goes through the change log. Rejects with
 * TRACKER_FAILED (state, image or logs unusable) or CONFIG_INVALID (the address
 * cannot be bound); nothing is left open then.
 */
export async function openJournalTracker(options: OpenJournalTrackerOptions): Promise<JournalTrackerHandle> {
  const tracker = new ServedJournalTracker(options);
  const opened = await tracker.open();
  return { tracker, opened, address: tracker.address, uri: tracker.uri, close: () => tracker.close() };
}

/**
 * The registry's builder (src/changetracking/registry.ts). Spec: `path` (the
 * image), and `socketPath`, or `host` and `port`, for the export; optional
 * `exportName`. Builds, does not open.
 */
export function journalTrackerFromSpec(spec: TrackerSpec, deps: TrackerDeps): ServedJournalTracker {
  const invalid = (message: string): LifeboatError =>
    new LifeboatError('CONFIG_INVALID', `tracker journal: ${message}`, { details: { kind: spec.kind } });
  if (typeof spec.path !== 'string' || spec.path.length === 0) throw invalid('path (the image file) is required');
  let listen: NbdListen;
  if (typeof spec.socketPath === 'string' && spec.socketPath.length > 0) {
    listen = { socketPath: spec.socketPath };
  } else if (typeof spec.port === 'number' && Number.isSafeInteger(spec.port) && spec.port >= 0 && spec.port < 65536) {
    listen = { host: typeof spec.host === 'string' ? spec.host : '127.0.0.1', port: spec.port };
  } else {
    throw invalid('socketPath, or port (and host), is required for the NBD export');
  }
  if (spec.exportName !== undefined && typeof spec.exportName !== 'string') throw invalid('exportName must be a string');
  return new ServedJournalTracker({
    imagePath: spec.path,
    stateDir: deps.stateDir,
    clock: deps.clock,
    replicaIsEmpty: deps.replicaIsEmpty,
    listen,
    ...(spec.exportName === undefined ? {} : { exportName: spec.exportName }),
  });
}
