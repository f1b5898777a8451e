import { LifeboatError } from '../core/errors.js';
import { DISK_NAME_PATTERN, TIME_ID_PATTERN } from './ids.js';

/**
 * A recovery point's manifest (sealed JSON). A point exists exactly when its
 * manifest does; it is written last, after the data and the index.
 */
export interface PointManifest {
  readonly formatVersion: 1;
  readonly pointId: string;
  readonly disk: string;
  readonly diskSizeBytes: number;
  readonly chunkSizeBytes: number;
  /** ISO-8601 UTC. */
  readonly createdAt: string;
  /**
   * ISO-8601 UTC: the moment of the source the point shows (a journal point: when its last
   * cut was captured). Absent on points made before it existed and on backups, whose
   * moment is their createdAt. The item's RPO is measured from it.
   */
  readonly capturedAt?: string;
  readonly consistency: 'crash' | 'app';
  readonly parentPointId: string | null;
  /** Source generation and the last journal sequence folded into this point (0 = none). */
  readonly source: { readonly generation: number; readonly lastSequence: number };
  /** How the point was made. */
  readonly origin: 'backup' | 'journal';
  /** Hex BLAKE3 of the index plaintext: ties the manifest to exactly one index. */
  readonly indexDigest: string;
  readonly stats: {
    readonly dataChunks: number;
    readonly zeroChunks: number;
    readonly newChunks: number;
    readonly bytesRead: number;
    readonly bytesStored: number;
  };
}

/** The source moment a point shows: capturedAt, or createdAt for points without it. */
export function pointCapturedAt(m: PointManifest): string {
  return m.capturedAt ?? m.createdAt;
}

export function parseManifest(json: Buffer, what: string): PointManifest {
  let m: unknown;
  try {
    m = JSON.parse(json.toString('utf8'));
  } catch (err) {
    throw new LifeboatError('CORRUPT_OBJECT', `${what} is not JSON`, { cause: err });
  }
  const bad = (field: string): never => {
    throw new LifeboatError('CORRUPT_OBJECT', `${what}: field ${field} is missing or invalid`);
  };
  if (typeof m !== 'object' || m === null) return bad('(root)');
  const o = m as Record<string, unknown>;
  if (o.formatVersion !== 1) {
    throw new LifeboatError('STORE_UNSUPPORTED_VERSION', `${what} has manifest version ${String(o.formatVersion)}`);
  }
  if (typeof o.pointId !== 'string' || !TIME_ID_PATTERN.test(o.pointId)) bad('pointId');
  if (typeof o.disk !== 'string' || !DISK_NAME_PATTERN.test(o.disk)) bad('disk');
  if (!Number.isSafeInteger(o.diskSizeBytes) || (o.diskSizeBytes as number) < 0) bad('diskSizeBytes');
  if (!Number.isSafeInteger(o.chunkSizeBytes) || (o.chunkSizeBytes as number) <= 0) bad('chunkSizeBytes');
  if (typeof o.createdAt !== 'string' || Number.isNaN(Date.parse(o.createdAt))) bad('createdAt');
  if (o.capturedAt !== undefined && (typeof o.capturedAt !== 'string' || Number.isNaN(Date.parse(o.capturedAt)))) bad('capturedAt');
  if (o.consistency !== 'crash' && o.consistency !== 'app') bad('consistency');
  if (o.parentPointId !== null && typeof o.parentPointId !== 'string') bad('parentPointId');
  if (typeof o.indexDigest !== 'string') bad('indexDigest');
  const s = o.source as Record<string, unknown> | undefined;
  if (!s || !Number.isSafeInteger(s.generation) || !Number.isSafeInteger(s.lastSequence)) bad('source');
  return o as unknown as PointManifest;
}
