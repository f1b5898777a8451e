import { mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { LifeboatError } from '../core/errors.js';
import { DISK_NAME_PATTERN } from '../format/ids.js';
import { fsyncDir, writeFileDurable } from '../io/durable.js';

/**
 * The process server's spool (docs/replication.md, "Spool"):
 *
 *   <spool>/<storeDisk>/vault                          the vault id the disk's segments go to
 *   <spool>/<storeDisk>/<generation>/<sequence:016x>.seg   a SEGMENT frame as received
 *   <spool>/<storeDisk>/<generation>/acked              highest sequence ever acknowledged (decimal)
 *   <spool>/<storeDisk>/<generation>/fenced             present: the generation was failed over away from
 *
 * Every file is written under a `.tmp` name, fsynced, renamed into place, and
 * its folder fsynced. A segment is acknowledged only after its file and then
 * `acked` are durable, so after a crash `acked` is the truth: a segment file
 * beyond it was never acknowledged (the agent sends it again) and is removed.
 */

export interface SpoolEntry {
  readonly disk: string;
  readonly generation: number;
  readonly sequence: number;
  readonly path: string;
  readonly sizeBytes: number;
  /** When the segment was spooled (recovered files: their modification time). */
  readonly spooledAtMs: number;
}

export interface SpoolRecovery {
  readonly entries: SpoolEntry[];
  readonly removedTempFiles: number;
  readonly removedUnacked: number;
  /** Folders the spool does not recognise; left alone (never delete unknown data). */
  readonly unknown: string[];
}

const SEG_FILE = /^([0-9a-f]{16})\.seg$/;
const GENERATION_DIR = /^(0|[1-9][0-9]{0,9})$/;

export const segmentFileName = (sequence: number): string => `${sequence.toString(16).padStart(16, '0')}.seg`;

function spoolError(err: unknown, what: string): LifeboatError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new LifeboatError('SPOOL_FULL', `the spool's file system is full (${what})`, { cause: err });
  return new LifeboatError('INTERNAL', `spool: ${what} failed: ${(err as Error).message}`, { cause: err });
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export class Spool {
  private used = 0;
  private reserved = 0;
  private readonly acked = new Map<string, number>();
  private readonly fenced = new Set<string>();
  private readonly vaults = new Map<string, string>();
  private readonly madeDirs = new Set<string>();

  private constructor(
    readonly dir: string,
    readonly limitBytes: number,
  ) {}

  /** Bytes of spooled segment files (acknowledged, not yet uploaded). */
  get usedBytes(): number {
    return this.used;
  }

  /**
   * Opens the spool left by a previous process: removes temp files and
   * segment files past `acked`, and returns the acknowledged segments still
   * to upload, oldest first.
   */
  static async open(dir: string, limitBytes: number): Promise<{ spool: Spool; recovery: SpoolRecovery }> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const spool = new Spool(dir, limitBytes);
    const entries: SpoolEntry[] = [];
    const unknown: string[] = [];
    let removedTempFiles = 0;
    let removedUnacked = 0;
    for (const disk of await readdir(dir)) {
      const diskDir = join(dir, disk);
      if (!DISK_NAME_PATTERN.test(disk) || !(await stat(diskDir)).isDirectory()) {
        unknown.push(diskDir);
        continue;
      }
      spool.madeDirs.add(diskDir);
      for (const name of await readdir(diskDir)) {
        const path = join(diskDir, name);
        if (name.endsWith('.tmp')) {
          await unlink(path);
          removedTempFiles++;
          continue;
        }
        if (name === 'vault') {
          spool.vaults.set(disk, (JSON.parse(await readFile(path, 'utf8')) as { vaultId: string }).vaultId);
          continue;
        }
        if (!GENERATION_DIR.test(name)) {
          unknown.push(path);
          continue;
        }
        const generation = Number(name);
        spool.madeDirs.add(path);
        const files = await readdir(path);
        const ackedText = files.includes('acked') ? await readText(join(path, 'acked')) : undefined;
        const acked = ackedText === undefined ? 0 : Number(ackedText.trim());
        if (!Number.isSafeInteger(acked) || acked < 0) throw new LifeboatError('INTERNAL', `spool: ${join(path, 'acked')} holds ${JSON.stringify(ackedText)}`);
        if (ackedText !== undefined) spool.acked.set(`${disk}/${generation}`, acked);
        if (files.includes('fenced')) spool.fenced.add(`${disk}/${generation}`);
        for (const file of files) {
          const filePath = join(path, file);
          if (file.endsWith('.tmp')) {
            await unlink(filePath);
            removedTempFiles++;
            continue;
          }
          const m = SEG_FILE.exec(file);
          if (!m) {
            if (file !== 'acked' && file !== 'fenced') unknown.push(filePath);
            continue;
          }
          const sequence = parseInt(m[1] as string, 16);
          if (sequence > acked) {
            // Written, but the process died before `acked` (and so the ACK): the agent sends it again.
            await unlink(filePath);
            removedUnacked++;
            continue;
          }
          const info = await stat(filePath);
          spool.used += info.size;
          entries.push({ disk, generation, sequence, path: filePath, sizeBytes: info.size, spooledAtMs: info.mtimeMs });
        }
      }
    }
    entries.sort((a, b) => a.spooledAtMs - b.spooledAtMs || a.sequence - b.sequence);
    return { spool, recovery: { entries, removedTempFiles, removedUnacked, unknown } };
  }

  private genDir(disk: string, generation: number): string {
    return join(this.dir, disk, String(generation));
  }

  /** Creates a folder and makes its entry in the parent durable. */
  private async ensureDir(path: string, parent: string): Promise<void> {
    if (this.madeDirs.has(path)) return;
    await mkdir(path, { recursive: true, mode: 0o700 });
    await fsyncDir(parent);
    this.madeDirs.add(path);
  }

  /** The highest sequence acknowledged for the disk and generation; undefined when the spool never acknowledged one. */
  ackedSequence(disk: string, generation: number): number | undefined {
    return this.acked.get(`${disk}/${generation}`);
  }

  isFenced(disk: string, generation: number): boolean {
    return this.fenced.has(`${disk}/${generation}`);
  }

  vaultOf(disk: string): string | undefined {
    return this.vaults.get(disk);
  }

  /** Records (durably) which vault a disk's segments go to; needed to upload after a restart. */
  async bindVault(disk: string, vaultId: string): Promise<void> {
    if (this.vaults.get(disk) === vaultId) return;
    const diskDir = join(this.dir, disk);
    try {
      await this.ensureDir(diskDir, this.dir);
      await writeFileDurable(diskDir, 'vault', [Buffer.from(JSON.stringify({ vaultId }) + '\n')]);
    } catch (err) {
      throw spoolError(err, `binding disk ${disk} to its vault`);
    }
    this.vaults.set(disk, vaultId);
  }

  /** Sets `acked` durably (also when the store, not the spool, knows the answer). */
  async setAcked(disk: string, generation: number, sequence: number): Promise<void> {
    const dir = this.genDir(disk, generation);
    try {
      await this.ensureDir(join(this.dir, disk), this.dir);
      await this.ensureDir(dir, join(this.dir, disk));
      await writeFileDurable(dir, 'acked', [Buffer.from(`${sequence}\n`)]);
    } catch (err) {
      throw spoolError(err, `recording sequence ${sequence} of ${disk}/${generation} as acknowledged`);
    }
    this.acked.set(`${disk}/${generation}`, sequence);
  }

  /** Marks a generation as failed over away from: its segments are refused from then on. */
  async markFenced(disk: string, generation: number): Promise<void> {
    const dir = this.genDir(disk, generation);
    this.fenced.add(`${disk}/${generation}`);
    try {
      await this.ensureDir(join(this.dir, disk), this.dir);
      await this.ensureDir(dir, join(this.dir, disk));
      await writeFileDurable(dir, 'fenced', [Buffer.alloc(0)]);
    } catch (err) {
      throw spoolError(err, `marking ${disk}/${generation} fenced`);
    }
  }

  /**
   * Spools one segment frame and records it as acknowledged; when this
   * resolves the caller may send ACK. SPOOL_FULL (retryable) when it would
   * pass the limit: nothing is written then.
   */
  async put(disk: string, generation: number, sequence: number, frame: readonly Buffer[], nowMs: number): Promise<SpoolEntry> {
    const size = frame.reduce((n, b) => n + b.length, 0);
    if (this.used + this.reserved + size > this.limitBytes) {
      throw new LifeboatError('SPOOL_FULL', `the spool is full (${this.used} of ${this.limitBytes} bytes used); send segment ${sequence} again later`, {
        details: { disk, sequence, usedBytes: this.used, limitBytes: this.limitBytes },
      });
    }
    this.reserved += size;
    const dir = this.genDir(disk, generation);
    const name = segmentFileName(sequence);
    try {
      try {
        await this.ensureDir(join(this.dir, disk), this.dir);
        await this.ensureDir(dir, join(this.dir, disk));
        await writeFileDurable(dir, name, frame);
      } catch (err) {
        throw spoolError(err, `writing segment ${sequence} of ${disk}/${generation}`);
      }
      try {
        await this.setAcked(disk, generation, sequence);
      } catch (err) {
        await unlink(join(dir, name)).catch(() => undefined);
        throw err;
      }
      this.used += size;
    } finally {
      this.reserved -= size;
    }
    return { disk, generation, sequence, path: join(dir, name), sizeBytes: size, spooledAtMs: nowMs };
  }

  /** Removes an uploaded (or dropped) segment file. */
  async remove(entry: SpoolEntry): Promise<void> {
    try {
      await unlink(entry.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw spoolError(err, `removing ${entry.path}`);
    }
    this.used -= entry.sizeBytes;
  }
}
