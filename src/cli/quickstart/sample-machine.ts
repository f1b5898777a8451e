import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { sleep } from '../../core/sleep.js';

const MiB = 2 ** 20;
const BLOCK_BYTES = 4096;
/** The disk of a sample machine: 256 MiB, sparse. */
export const SAMPLE_DISK_BYTES = 256 * MiB;
/** The last 64 MiB hold the log: 512-byte numbered records, one a second, wrapping around. */
const LOG_OFFSET = 192 * MiB;
const RECORD_BYTES = 512;
const LOG_SLOTS = (SAMPLE_DISK_BYTES - LOG_OFFSET) / RECORD_BYTES;
/** Random 4 KiB blocks overwritten each second, in the data area before the log. */
const BLOCKS_PER_TICK = 4;
const TICK_MS = 1000;
const RECORD = /^lifeboat sample log record (\d+) /;

/** Where a sample machine lives on this host: DIR/machines/NAME/{disk.img,agent/}. */
export function samplePaths(dir: string, name: string): { readonly root: string; readonly image: string; readonly agentDir: string } {
  const root = join(dir, 'machines', name);
  return { root, image: join(root, 'disk.img'), agentDir: join(root, 'agent') };
}

/** A sparse disk image with some data: 1 MiB of random bytes or text every 16 MiB of the data area, the rest unallocated. */
export async function createSampleDisk(path: string): Promise<void> {
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
  const f = await open(path, 'wx', 0o600);
  try {
    await f.truncate(SAMPLE_DISK_BYTES);
    for (let mib = 0; mib < LOG_OFFSET / MiB; mib += 16) {
      const block = mib % 32 === 0 ? randomBytes(MiB) : Buffer.from(`lifeboat sample block ${mib} `.repeat(60_000)).subarray(0, MiB);
      await f.write(block, 0, MiB, mib * MiB);
    }
    await f.sync();
  } finally {
    await f.close();
  }
}

/** The number the next log record gets: one past the highest record found in the log. */
async function nextRecordNumber(f: FileHandle): Promise<number> {
  const buf = Buffer.alloc(LOG_SLOTS * RECORD_BYTES);
  await f.read(buf, 0, buf.length, LOG_OFFSET);
  let highest = -1;
  for (let slot = 0; slot < LOG_SLOTS; slot++) {
    const m = RECORD.exec(buf.toString('latin1', slot * RECORD_BYTES, slot * RECORD_BYTES + 64));
    if (m) highest = Math.max(highest, Number(m[1]));
  }
  return highest + 1;
}

/**
 * What keeps a sample machine busy, as an application would: every second a few
 * random 4 KiB blocks of the data area are overwritten and one numbered record is
 * appended to the log at the end of the disk (the numbering goes on after a restart).
 */
export class SampleWriter {
  private readonly stopping = new AbortController();

  private constructor(
    private readonly file: FileHandle,
    private next: number,
    private readonly done: Promise<void>[],
  ) {}

  /** Opens the image (created first when missing) and starts writing; `onError` hears a failed write, after which the writer stops. */
  static async start(image: string, onError: (err: unknown) => void): Promise<SampleWriter> {
    if (!existsSync(image)) await createSampleDisk(image);
    const file = await open(image, 'r+');
    const writer = new SampleWriter(file, await nextRecordNumber(file), []);
    writer.done.push(writer.loop().catch(onError));
    return writer;
  }

  /** The number of the next log record. */
  get nextRecord(): number {
    return this.next;
  }

  private async loop(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      for (let i = 0; i < BLOCKS_PER_TICK; i++) {
        const block = Math.floor(Math.random() * (LOG_OFFSET / BLOCK_BYTES));
        await this.file.write(randomBytes(BLOCK_BYTES), 0, BLOCK_BYTES, block * BLOCK_BYTES);
      }
      const record = Buffer.alloc(RECORD_BYTES, ' ');
      record.write(`lifeboat sample log record ${this.next} ${new Date().toISOString()}\n`, 'latin1');
      await this.file.write(record, 0, RECORD_BYTES, LOG_OFFSET + (this.next % LOG_SLOTS) * RECORD_BYTES);
      this.next++;
      await sleep(TICK_MS, signal);
    }
  }

  /** Stops writing, flushes the image and closes it. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.all(this.done);
    await this.file.sync();
    await this.file.close();
  }
}
