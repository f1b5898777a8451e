import { open, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import type { ChunkIndex } from './chunk-index.js';
import { indexRecord } from './chunk-index.js';
import type { LogHeader, RecordHeader, RecordType } from './log-format.js';
import {
  LOG_HEADER_BYTES,
  RECORD_HEADER_BYTES,
  RecordType as Types,
  decodeLogHeader,
  decodeRecordHeader,
  encodeLogHeader,
  encodeRecordHeader,
  logFileName,
  recordCrcMatches,
} from './log-format.js';

/** Bytes one append batch may hold; a single record may exceed it (it then goes alone). */
const BATCH_BYTES = 64 * 1024 * 1024;
/** Read window of the replay scanner. */
const SCAN_WINDOW_BYTES = 8 * 1024 * 1024;

interface Pending {
  readonly parts: Buffer[];
  readonly bytes: number;
  readonly type: RecordType;
  readonly offset: number;
  readonly length: number;
  readonly onWritten: (() => void) | undefined;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

function logError(message: string, err: unknown, details: Record<string, unknown>): LifeboatError {
  if (err instanceof LifeboatError) return err;
  return new LifeboatError('TRACKER_FAILED', message, { cause: err, details });
}

/**
 * One change log file. Appends go through a single sequential writer that
 * batches whatever queued while the previous batch was being written (group
 * commit): one positional writev per batch, batches strictly one after another,
 * so the file only ever grows by whole batches and a killed process leaves a
 * clean prefix. Each record enters `index` the moment its batch is written, in
 * file order, before its append() resolves.
 */
export class ChangeLog {
  readonly index: ChunkIndex;
  private queue: Pending[] = [];
  private writing = false;
  private appended = 0;
  private syncedAt = 0;
  private broken: unknown = null;
  private closed = false;

  private constructor(
    readonly number: number,
    readonly path: string,
    private readonly fh: FileHandle,
    private end: number,
    private readonly sizeBytes: number,
    index: ChunkIndex,
    synced: boolean,
  ) {
    this.index = index;
    if (!synced) this.appended = 1;
  }

  /** Creates a new, empty log (header written, not yet synced). */
  static async create(dir: string, header: LogHeader): Promise<ChangeLog> {
    const path = join(dir, logFileName(header.number));
    try {
      const fh = await open(path, 'wx+', 0o600);
      await writeAllAt(fh, encodeLogHeader(header), 0);
      return new ChangeLog(header.number, path, fh, LOG_HEADER_BYTES, header.imageSizeBytes, new Map(), false);
    } catch (err) {
      throw logError('cannot create a change log', err, { path });
    }
  }

  /** A log found on disk and scanned; it is never appended to again. */
  static adopt(scan: ScannedLog, sizeBytes: number): ChangeLog {
    return new ChangeLog(scan.header.number, scan.path, scan.fh, scan.end, sizeBytes, scan.index, false);
  }

  get sizeOnDisk(): number {
    return this.end;
  }

  /**
   * Appends one record; resolves once it is written (not synced) and indexed.
   * `onWritten` runs synchronously at that moment, in file order across records.
   */
  append(type: RecordType, offset: number, length: number, payload: Buffer | null, fua: boolean, onWritten?: () => void): Promise<void> {
    if (this.broken !== null) return Promise.reject(logError('the change log failed earlier', this.broken, { path: this.path }));
    if (this.closed) return Promise.reject(new LifeboatError('INTERNAL', 'append to a closed change log', { details: { path: this.path } }));
    const header = encodeRecordHeader(type, fua ? 1 : 0, offset, length, payload);
    const parts = payload === null ? [header] : [header, payload];
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ parts, bytes: RECORD_HEADER_BYTES + (payload?.length ?? 0), type, offset, length, onWritten, resolve, reject });
      if (!this.writing) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    this.writing = true;
    while (this.queue.length > 0) {
      let bytes = 0;
      let n = 0;
      while (n < this.queue.length && (n === 0 || bytes + (this.queue[n]?.bytes ?? 0) <= BATCH_BYTES)) {
        bytes += this.queue[n]?.bytes ?? 0;
        n++;
      }
      const batch = this.queue.splice(0, n);
      const at = this.end;
      try {
        await writevAllAt(this.fh, batch.flatMap((p) => p.parts), at);
      } catch (err) {
        // The file may now end in a partial batch: nothing more may follow it.
        this.broken = err;
        const failure = logError('cannot append to the change log', err, { path: this.path });
        for (const p of [...batch, ...this.queue.splice(0)]) p.reject(failure);
        break;
      }
      this.end = at + bytes;
      this.appended++;
      let pos = at;
      for (const p of batch) {
        indexRecord(this.index, this.sizeBytes, p.offset, p.length, p.type === Types.WRITE ? pos + RECORD_HEADER_BYTES : null);
        pos += p.bytes;
        p.onWritten?.();
        p.resolve();
      }
    }
    this.writing = false;
  }

  /** Makes every record appended so far durable (fdatasync); a no-op when nothing new. */
  async sync(): Promise<void> {
    if (this.closed) return;
    const upTo = this.appended;
    if (upTo === this.syncedAt) return;
    try {
      await this.fh.datasync();
    } catch (err) {
      throw logError('cannot sync the change log', err, { path: this.path });
    }
    this.syncedAt = Math.max(this.syncedAt, upTo);
  }

  /** Reads `length` bytes of record data at `position`. */
  async read(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, position + done);
      if (bytesRead === 0) throw new LifeboatError('TRACKER_FAILED', 'change log is shorter than its index says', { details: { path: this.path, position } });
      done += bytesRead;
    }
    return buf;
  }

  /** Cuts a torn tail off a scanned log so that only whole records remain. */
  async truncateTo(end: number): Promise<void> {
    await this.fh.truncate(end);
    this.end = end;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => undefined);
  }

  /** Closes and deletes the file (after its cut was committed). */
  async remove(): Promise<void> {
    await this.close();
    await rm(this.path, { force: true });
  }
}

export interface ScannedRecord extends RecordHeader {
  /** Where the record's header starts in the file. */
  readonly position: number;
}

export interface ScannedLog {
  readonly path: string;
  readonly header: LogHeader;
  readonly fh: FileHandle;
  /** End of the last whole record. */
  readonly end: number;
  readonly index: ChunkIndex;
  readonly records: number;
  /** The file ended inside a record (bytes after `end` belong to no whole record). */
  readonly torn: boolean;
  /** Why the log cannot be trusted (a whole record that fails its check...), or null. */
  readonly damage: string | null;
}

/**
 * Reads a log from the start, verifying every record. Stops at the first
 * problem: a record cut short by the end of the file is a torn tail (`torn`);
 * anything else (bad magic, bad CRC of a whole record, a range outside the
 * image) is `damage`. `onRecord` sees each good record in order.
 */
export async function scanLog(path: string, sizeBytes: number, onRecord?: (r: ScannedRecord) => void): Promise<ScannedLog> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r+');
  } catch (err) {
    throw logError('cannot open a change log', err, { path });
  }
  try {
    const fileBytes = (await fh.stat()).size;
    const head = Buffer.alloc(LOG_HEADER_BYTES);
    const { bytesRead } = await fh.read(head, 0, LOG_HEADER_BYTES, 0);
    const header = decodeLogHeader(head.subarray(0, bytesRead));
    if (typeof header === 'string') {
      // A header cut short can only be a log created just before a kill.
      const torn = bytesRead < LOG_HEADER_BYTES;
      const empty: LogHeader = { number: -1, imageSizeBytes: sizeBytes, bootId: '', createdAtMs: 0 };
      return { path, header: empty, fh, end: 0, index: new Map(), records: 0, torn, damage: torn ? null : header };
    }
    const index: ChunkIndex = new Map();
    let pos = LOG_HEADER_BYTES;
    let records = 0;
    let window = Buffer.alloc(0);
    let windowAt = pos;
    const bytesAt = async (at: number, length: number): Promise<Buffer | null> => {
      if (at + length > fileBytes) return null;
      if (at < windowAt || at + length > windowAt + window.length) {
        const want = Math.max(length, Math.min(SCAN_WINDOW_BYTES, fileBytes - at));
        window = Buffer.allocUnsafe(want);
        let got = 0;
        while (got < want) {
          const r = await fh.read(window, got, want - got, at + got);
          if (r.bytesRead === 0) break;
          got += r.bytesRead;
        }
        window = window.subarray(0, got);
        windowAt = at;
        if (got < length) return null;
      }
      return window.subarray(at - windowAt, at - windowAt + length);
    };
    while (true) {
      if (pos === fileBytes) return { path, header, fh, end: pos, index, records, torn: false, damage: null };
      const rh = await bytesAt(pos, RECORD_HEADER_BYTES);
      if (rh === null) return { path, header, fh, end: pos, index, records, torn: true, damage: null };
      const record = decodeRecordHeader(rh);
      if (typeof record === 'string') return { path, header, fh, end: pos, index, records, torn: false, damage: `${record} at byte ${pos}` };
      const headerCopy = Buffer.from(rh);
      const payload = record.payloadBytes === 0 ? Buffer.alloc(0) : await bytesAt(pos + RECORD_HEADER_BYTES, record.payloadBytes);
      if (payload === null) return { path, header, fh, end: pos, index, records, torn: true, damage: null };
      if (!recordCrcMatches(headerCopy, payload)) {
        return { path, header, fh, end: pos, index, records, torn: false, damage: `record checksum mismatch at byte ${pos}` };
      }
      if (record.offset + record.length > sizeBytes) {
        return { path, header, fh, end: pos, index, records, torn: false, damage: `record at byte ${pos} reaches past the image` };
      }
      indexRecord(index, sizeBytes, record.offset, record.length, record.type === Types.WRITE ? pos + RECORD_HEADER_BYTES : null);
      onRecord?.({ ...record, position: pos });
      records++;
      pos += RECORD_HEADER_BYTES + record.payloadBytes;
    }
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw logError('cannot read a change log', err, { path });
  }
}

export async function writeAllAt(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** writev at a position (at most IOV_MAX = 1024 buffers per call), finishing a short write part by part. */
async function writevAllAt(fh: FileHandle, parts: Buffer[], position: number): Promise<void> {
  let pos = position;
  for (let i = 0; i < parts.length; i += 1024) {
    const slice = parts.slice(i, i + 1024);
    const want = slice.reduce((n, p) => n + p.length, 0);
    const { bytesWritten } = await fh.writev(slice, pos);
    if (bytesWritten < want) {
      let skip = bytesWritten;
      let at = pos + bytesWritten;
      for (const p of slice) {
        if (skip >= p.length) {
          skip -= p.length;
          continue;
        }
        const rest = p.subarray(skip);
        skip = 0;
        await writeAllAt(fh, rest, at);
        at += rest.length;
      }
    }
    pos += want;
  }
}
