import type { NbdLogger } from '../../nbd/log.js';
import { startNbdServer } from '../../nbd/server.js';
import type { NbdAddress, NbdListen } from '../../nbd/server.js';
import type { TrackerOpenResult } from '../tracker.js';
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

export interface JournalTrackerHandle {
  /** Already opened: tracker.open() returns `opened` again. */
  readonly tracker: JournalTracker;
  readonly opened: TrackerOpenResult;
  readonly address: NbdAddress;
  /** `nbd+unix:///disk?socket=...` or `nbd://host:port/disk`, as qemu, libnbd and fio accept it. */
  readonly uri: string;
  /** Hangs up on the disk's users (waiting for their requests in flight), then closes the tracker cleanly. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts the journal tracker for one disk: recovers its state (open()), then
 * serves the image as a writable NBD export whose every write goes through the
 * change log. Nothing is served before recovery is complete. Rejects with
 * TRACKER_FAILED (state, image or logs unusable) or CONFIG_INVALID (the
 * address cannot be bound); nothing is left open then.
 */
export async function openJournalTracker(options: OpenJournalTrackerOptions): Promise<JournalTrackerHandle> {
  const tracker = new JournalTracker(options);
  const opened = await tracker.open();
  const exportName = options.exportName ?? 'disk';
  let server;
  try {
    server = await startNbdServer({
      exports: { [exportName]: tracker.target },
      listen: options.listen,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
  } catch (err) {
    await tracker.close();
    throw err;
  }
  let closing: Promise<void> | null = null;
  return {
    tracker,
    opened,
    address: server.address,
    uri: server.uri(exportName),
    close: () => {
      closing ??= server.close().then(() => tracker.close());
      return closing;
    },
  };
}
