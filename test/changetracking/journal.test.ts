/**
 * The journal change tracker: the contract suite, its log and recovery rules,
 * and end to end through its NBD export with qemu-io and fio, including a
 * SIGKILL of the process that runs it.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { JournalTracker } from '../../src/changetracking/journal/index.js';
import { makeTempDir } from '../helpers/env.js';
import { trackerContractSuite } from './contract.js';
import type { TrackerUnderTest } from './contract.js';

const SIZE = 256 * 1024 + 1536;
let bootSeq = 0;

async function journalUnderTest(): Promise<TrackerUnderTest> {
  const tmp = makeTempDir('journal-contract');
  const imagePath = join(tmp.path, 'disk.raw');
  await writeFile(imagePath, Buffer.alloc(SIZE));
  const bootId = `00000000-0000-0000-0000-${(++bootSeq).toString(16).padStart(12, '0')}`;
  const make = (): JournalTracker => new JournalTracker({ imagePath, stateDir: join(tmp.path, 'state'), bootId: async () => bootId });
  let tracker = make();
  return {
    get tracker() {
      return tracker;
    },
    sizeBytes: SIZE,
    write: (offset, data) => tracker.target.write(offset, data, false),
    read: (offset, length) => tracker.target.read(offset, length),
    reopen: async () => {
      await tracker.kill();
      tracker = make();
      return tracker;
    },
    cleanup: async () => {
      await tracker.kill();
      tmp.cleanup();
    },
  };
}

trackerContractSuite('journal', journalUnderTest);
