/**
 * Where each kind of object lives in a store (docs/format/store.md). Every key
 * the program writes is built here.
 */
export const CONFIG_KEY = 'config';

export const keySlotKey = (slotId: string): string => `keys/${slotId}`;
export const KEYS_PREFIX = 'keys/';

export const packKey = (packIdHex: string): string => `data/${packIdHex.slice(0, 2)}/${packIdHex}`;
export const DATA_PREFIX = 'data/';
export const packIdFromKey = (key: string): string | undefined => /^data\/[0-9a-f]{2}\/([0-9a-f]{32})$/.exec(key)?.[1];

export const indexKey = (indexId: string): string => `index/${indexId}`;
export const INDEX_PREFIX = 'index/';

export const pointIndexKey = (disk: string, pointId: string): string => `points/${disk}/${pointId}.index`;
export const pointManifestKey = (disk: string, pointId: string): string => `points/${disk}/${pointId}.manifest`;
export const POINTS_PREFIX = 'points/';
export const pointsOfDiskPrefix = (disk: string): string => `points/${disk}/`;
/** Parses `points/DISK/POINT.manifest|index`. */
export function parsePointKey(key: string): { disk: string; pointId: string; kind: 'manifest' | 'index' } | undefined {
  const m = /^points\/([^/]+)\/([0-9A-Z]{26})\.(manifest|index)$/.exec(key);
  return m ? { disk: m[1] as string, pointId: m[2] as string, kind: m[3] as 'manifest' | 'index' } : undefined;
}

const pad = (n: number, width: number): string => n.toString(16).padStart(width, '0');
export const segmentKey = (disk: string, generation: number, sequence: number): string =>
  `journal/${disk}/${pad(generation, 8)}/${pad(sequence, 16)}`;
export const segmentsPrefix = (disk: string, generation?: number): string =>
  generation === undefined ? `journal/${disk}/` : `journal/${disk}/${pad(generation, 8)}/`;
export const JOURNAL_PREFIX = 'journal/';
export function parseSegmentKey(key: string): { disk: string; generation: number; sequence: number } | undefined {
  const m = /^journal\/([^/]+)\/([0-9a-f]{8})\/([0-9a-f]{16})$/.exec(key);
  return m ? { disk: m[1] as string, generation: parseInt(m[2] as string, 16), sequence: parseInt(m[3] as string, 16) } : undefined;
}

export const lockKey = (disk: string): string => `locks/${disk}`;
export const LOCKS_PREFIX = 'locks/';
