import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * A deterministic record writer for acknowledged-write checks (crash consistency of a
 * replica, RPO after a cut).
 *
 * Record n is one 4 KiB block written to slot slotOf(n) — a pseudo-random slot derived
 * from the seed — at `offsetBytes + slot * 4096` of the target. Records are written one
 * at a time; record n is acknowledged only when its write (and fsync) returned, and only
 * then is record n+1 started. So at any instant every state a correct replica or a
 * crashed disk can show is "records 1..k applied, none after", for some k.
 *
 * Block layout (little-endian):
 *   0   8  magic "LBREC001"
 *   8   8  record number n (>= 1)
 *  16   4  seed
 *  20   4  reserved, 0
 *  24   8  slot
 *  32 4032 payload, a pure function of (seed, n)
 * 4064  32 SHA-256 of bytes 0..4063
 * Every byte of the block is a function of (seed, n), so any difference from the
 * expected block — a torn write, a flipped byte, a block from elsewhere — is detected.
 */
export const RECORD_BYTES = 4096;
const MAGIC = Buffer.from('LBREC001', 'latin1');
const PAYLOAD_START = 32;
const CHECKSUM_START = RECORD_BYTES - 32;

export interface RecordLayout {
  readonly seed: number;
  /** Number of 4 KiB slots records are spread over. */
  readonly slotCount: number;
  /** Where slot 0 starts in the target; a multiple of 4096. */
  readonly offsetBytes: number;
}

export interface AckedRecord {
  readonly record: number;
  readonly slot: number;
  /** When the write (and fsync) returned, from the writer's clock (Date.now by default). */
  readonly ackedAtMs: number;
}

/** What verifyImage needs: the layout and the acknowledged records, oldest first. */
export interface AckLog {
  readonly layout: RecordLayout;
  readonly records: readonly AckedRecord[];
}

/** Writes `block` at `offsetBytes` and resolves only once the write is durable. */
export type DurableWrite = (offsetBytes: number, block: Buffer) => Promise<void>;

export interface RecordWriterOptions {
  /** Any 32-bit unsigned integer; the same seed gives the same slots and blocks. */
  readonly seed: number;
  readonly slotCount: number;
  readonly offsetBytes?: number;
  /** Clock for ackedAtMs; Date.now unless a test passes its own. */
  readonly now?: () => number;
}

export class RecordWriter {
  readonly layout: RecordLayout;
  readonly #write: DurableWrite;
  readonly #close: () => Promise<void>;
  readonly #now: () => number;
  readonly #acked: AckedRecord[] = [];
  #inFlight: { readonly record: number; readonly slot: number; readonly startedAtMs: number } | undefined;
  #busy = false;

  /** Writes through `write`, e.g. an NBD client's pwrite followed by flush. */
  constructor(write: DurableWrite, options: RecordWriterOptions, close: () => Promise<void> = async () => {}) {
    this.layout = checkLayout({ seed: options.seed, slotCount: options.slotCount, offsetBytes: options.offsetBytes ?? 0 });
    this.#write = write;
    this.#close = close;
    this.#now = options.now ?? Date.now;
  }

  /** Writes into a file (created if missing) opened with O_DSYNC, each write followed by fsync. */
  static async openFile(path: string, options: RecordWriterOptions): Promise<RecordWriter> {
    const handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC, 0o644);
    const write: DurableWrite = async (offset, block) => {
      const { bytesWritten } = await handle.write(block, 0, block.length, offset);
      if (bytesWritten !== block.length) throw new Error(`short write at ${offset} in ${path}: ${bytesWritten} of ${block.length} bytes`);
      await handle.sync();
    };
    return new RecordWriter(write, options, () => handle.close());
  }

  /** Acknowledged records so far, oldest first (a snapshot). */
  get acked(): AckLog {
    return { layout: this.layout, records: [...this.#acked] };
  }

  /** The record being written now, if any: it may or may not reach the target. */
  get inFlight(): { readonly record: number; readonly slot: number; readonly startedAtMs: number } | undefined {
    return this.#inFlight;
  }

  /** Writes the next record and resolves with its acknowledgment. */
  async writeNext(): Promise<AckedRecord> {
    if (this.#busy) throw new Error('RecordWriter writes one record at a time: await the previous writeNext()');
    this.#busy = true;
    try {
      const record = this.#acked.length + 1;
      const slot = slotOf(this.layout, record);
      this.#inFlight = { record, slot, startedAtMs: this.#now() };
      await this.#write(this.layout.offsetBytes + slot * RECORD_BYTES, recordBlock(this.layout, record));
      const ack: AckedRecord = { record, slot, ackedAtMs: this.#now() };
      this.#acked.push(ack);
      this.#inFlight = undefined;
      return ack;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Writes records until `count` more are acknowledged or `signal` aborts; resolves with
   * the number written. A failed write rejects (the record stays in flight, unacknowledged).
   */
  async run(options: { readonly count?: number; readonly signal?: AbortSignal } = {}): Promise<number> {
    const { count = Number.POSITIVE_INFINITY, signal } = options;
    let written = 0;
    while (written < count && !signal?.aborted) {
      await this.writeNext();
      written++;
    }
    return written;
  }

  async close(): Promise<void> {
    await this.#close();
  }
}

/** The slot record `record` is written to. */
export function slotOf(layout: RecordLayout, record: number): number {
  const h = digest(layout.seed, record, 'slot');
  // 48 bits of the hash keep the modulo bias negligible for any realistic slot count.
  return (h.readUIntLE(0, 6) % layout.slotCount);
}

/** The exact 4 KiB block of record `record`. */
export function recordBlock(layout: RecordLayout, record: number): Buffer {
  const block = Buffer.alloc(RECORD_BYTES);
  MAGIC.copy(block, 0);
  block.writeBigUInt64LE(BigInt(record), 8);
  block.writeUInt32LE(layout.seed >>> 0, 16);
  block.writeBigUInt64LE(BigInt(slotOf(layout, record)), 24);
  // xorshift32 seeded from (seed, record): cheap, and different for every record.
  let x = digest(layout.seed, record, 'payload').readUInt32LE(0) || 1;
  for (let off = PAYLOAD_START; off < CHECKSUM_START; off += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block.writeUInt32LE(x >>> 0, off);
  }
  createHash('sha256').update(block.subarray(0, CHECKSUM_START)).digest().copy(block, CHECKSUM_START);
  return block;
}

export interface SlotProblem {
  readonly slot: number;
  readonly offsetBytes: number;
  readonly detail: string;
}

export interface ImageReport {
  /** k: the image should hold exactly records 1..k (the newest valid record found). */
  readonly prefix: number;
  readonly slotsChecked: number;
  /** Slots holding a valid record. */
  readonly slotsWithRecords: number;
  /** Blocks that are neither zero nor a valid record of this layout at this slot. */
  readonly torn: readonly SlotProblem[];
  /** Slots whose valid content differs from what records 1..k leave there. */
  readonly notPrefix: readonly SlotProblem[];
  /** Records acknowledged before upToTime that are not within 1..k. */
  readonly lostAcknowledged: readonly AckedRecord[];
  readonly ok: boolean;
}

export interface VerifyOptions {
  /**
   * Only records acknowledged strictly before this time (ms, the writer's clock) must be
   * in the image, e.g. the moment of a cut minus the allowed RPO. Default: all of them.
   */
  readonly upToTime?: number;
}

/**
 * Checks an image (a Buffer, or the path of a file or image) against what the writer
 * acknowledged, and throws an Error listing every problem unless:
 * - every block is zero or a valid record of this layout at its own slot (no torn or
 *   foreign blocks);
 * - with k the newest record found, every slot holds the latest of records 1..k written
 *   there, or zeros if none was (crash consistency: a prefix of the writes, no holes);
 * - every record acknowledged before `upToTime` is within 1..k (no acknowledged write lost).
 * Resolves with the report (prefix = k) when all hold.
 */
export async function verifyImage(image: Buffer | string, acked: AckLog, options: VerifyOptions = {}): Promise<ImageReport> {
  const report = await inspectImage(image, acked, options);
  if (!report.ok) throw new Error(describeFailure(image, report));
  return report;
}

/** verifyImage without the throw: the full report, ok or not. */
export async function inspectImage(image: Buffer | string, acked: AckLog, options: VerifyOptions = {}): Promise<ImageReport> {
  const layout = checkLayout(acked.layout);
  for (const ack of acked.records) {
    const expected = slotOf(layout, ack.record);
    if (ack.slot !== expected) {
      throw new Error(`acknowledged record ${ack.record} claims slot ${ack.slot}, but seed ${layout.seed} puts it in slot ${expected}: wrong layout?`);
    }
  }
  const bytes = typeof image === 'string' ? await readRange(image, layout.offsetBytes, layout.slotCount * RECORD_BYTES) : image.subarray(layout.offsetBytes);

  // What each slot holds: 0 = zeros, n = valid record n, -1 = torn or foreign.
  const found = new Array<number>(layout.slotCount).fill(0);
  const torn: SlotProblem[] = [];
  let prefix = 0;
  let slotsWithRecords = 0;
  for (let slot = 0; slot < layout.slotCount; slot++) {
    const block = blockAt(bytes, slot);
    const problem = classify(layout, slot, block);
    if (typeof problem === 'string') {
      found[slot] = -1;
      torn.push({ slot, offsetBytes: layout.offsetBytes + slot * RECORD_BYTES, detail: problem });
    } else if (problem > 0) {
      found[slot] = problem;
      slotsWithRecords++;
      prefix = Math.max(prefix, problem);
    }
  }

  // The state records 1..prefix leave behind, compared slot by slot (torn slots are already reported).
  const expected = new Array<number>(layout.slotCount).fill(0);
  for (let record = 1; record <= prefix; record++) expected[slotOf(layout, record)] = record;
  const notPrefix: SlotProblem[] = [];
  for (let slot = 0; slot < layout.slotCount; slot++) {
    const have = found[slot] ?? 0;
    const want = expected[slot] ?? 0;
    if (have === -1 || have === want) continue;
    notPrefix.push({
      slot,
      offsetBytes: layout.offsetBytes + slot * RECORD_BYTES,
      detail: `expected ${want ? `record ${want}` : 'zeros'} (latest of records 1..${prefix} there), found ${have ? `record ${have}` : 'zeros'}`,
    });
  }

  const upToTime = options.upToTime ?? Number.POSITIVE_INFINITY;
  const lostAcknowledged = acked.records.filter((ack) => ack.ackedAtMs < upToTime && ack.record > prefix);
  return {
    prefix,
    slotsChecked: layout.slotCount,
    slotsWithRecords,
    torn,
    notPrefix,
    lostAcknowledged,
    ok: torn.length === 0 && notPrefix.length === 0 && lostAcknowledged.length === 0,
  };
}

/** A record number for a valid block, 0 for zeros, or what is wrong with the block. */
function classify(layout: RecordLayout, slot: number, block: Buffer): number | string {
  if (isZero(block)) return 0;
  if (!block.subarray(0, MAGIC.length).equals(MAGIC)) return 'not zero and no record magic (foreign or torn block)';
  const record = Number(block.readBigUInt64LE(8));
  const seed = block.readUInt32LE(16);
  if (seed !== layout.seed >>> 0) return `record ${record} of another seed (${seed})`;
  if (!Number.isSafeInteger(record) || record < 1) return `bad record number ${record}`;
  const home = slotOf(layout, record);
  if (home !== slot) return `record ${record} belongs in slot ${home} (misplaced write)`;
  if (!block.equals(recordBlock(layout, record))) {
    const checksumOk = createHash('sha256').update(block.subarray(0, CHECKSUM_START)).digest().equals(block.subarray(CHECKSUM_START));
    return `record ${record} header but ${checksumOk ? 'unexpected content' : 'checksum mismatch'} (torn or corrupted: first differing byte at ${firstDifference(block, recordBlock(layout, record))})`;
  }
  return record;
}

function describeFailure(image: Buffer | string, report: ImageReport): string {
  const LIMIT = 10;
  const list = (items: readonly SlotProblem[]): string =>
    items
      .slice(0, LIMIT)
      .map((p) => `\n    slot ${p.slot} @ ${p.offsetBytes}: ${p.detail}`)
      .join('') + (items.length > LIMIT ? `\n    … and ${items.length - LIMIT} more` : '');
  const where = typeof image === 'string' ? image : `a ${image.length}-byte buffer`;
  const lines = [`image ${where} fails the acknowledged-write check (newest record found: ${report.prefix}):`];
  if (report.torn.length) lines.push(`  ${report.torn.length} torn or corrupt block(s):${list(report.torn)}`);
  if (report.notPrefix.length) lines.push(`  not a prefix of the writes, ${report.notPrefix.length} slot(s) differ from records 1..${report.prefix}:${list(report.notPrefix)}`);
  if (report.lostAcknowledged.length) {
    const lost = report.lostAcknowledged;
    lines.push(
      `  ${lost.length} acknowledged record(s) missing, records ${lost[0]?.record}..${lost.at(-1)?.record} (first acknowledged at ${lost[0]?.ackedAtMs} ms)`,
    );
  }
  return lines.join('\n');
}

function checkLayout(layout: RecordLayout): RecordLayout {
  if (!Number.isInteger(layout.seed) || layout.seed < 0 || layout.seed > 0xffffffff) throw new Error(`seed must be a 32-bit unsigned integer, got ${layout.seed}`);
  if (!Number.isSafeInteger(layout.slotCount) || layout.slotCount < 1) throw new Error(`slotCount must be a positive integer, got ${layout.slotCount}`);
  if (!Number.isSafeInteger(layout.offsetBytes) || layout.offsetBytes < 0 || layout.offsetBytes % RECORD_BYTES !== 0) {
    throw new Error(`offsetBytes must be a non-negative multiple of ${RECORD_BYTES}, got ${layout.offsetBytes}`);
  }
  return Object.freeze({ ...layout });
}

function digest(seed: number, record: number, purpose: string): Buffer {
  return createHash('sha256').update(`lifeboat-record-writer/${purpose}/${seed}/${record}`).digest();
}

/** Slot `slot` of the image; bytes past its end read as zeros, like a sparse file's tail. */
function blockAt(bytes: Buffer, slot: number): Buffer {
  const start = slot * RECORD_BYTES;
  const block = bytes.subarray(start, start + RECORD_BYTES);
  if (block.length === RECORD_BYTES) return block;
  const padded = Buffer.alloc(RECORD_BYTES);
  block.copy(padded);
  return padded;
}

async function readRange(path: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) break; // past the end: zeros, as in a sparse image
      done += bytesRead;
    }
    return buffer;
  } finally {
    await handle.close();
  }
}

function isZero(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
