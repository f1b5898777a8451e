import { CHUNK_ID_BYTES } from '../format/crypto.js';

interface Entry<V> {
  readonly id: Buffer;
  readonly value: V;
}

/**
 * A map from 16-byte chunk ids to values, built for millions of entries: keys
 * are the id's first 30 bits (a small integer V8 stores unboxed), with the full
 * id compared on lookup, so lookups allocate nothing. Ids are keyed hashes,
 * hence uniformly spread.
 */
export class ChunkIdMap<V> {
  private readonly map = new Map<number, Entry<V> | Entry<V>[]>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Looks up the id stored at `ids[offset, offset+16)`. */
  get(ids: Buffer, offset = 0): V | undefined {
    const slot = this.map.get(ids.readUInt32LE(offset) & 0x3fffffff);
    if (slot === undefined) return undefined;
    if (!Array.isArray(slot)) return sameId(slot.id, ids, offset) ? slot.value : undefined;
    for (const e of slot) if (sameId(e.id, ids, offset)) return e.value;
    return undefined;
  }

  has(ids: Buffer, offset = 0): boolean {
    return this.get(ids, offset) !== undefined;
  }

  /** Adds the id unless present; returns false when it was already there (the old value stays). */
  add(ids: Buffer, offset: number, value: V): boolean {
    const key = ids.readUInt32LE(offset) & 0x3fffffff;
    const slot = this.map.get(key);
    const entry = (): Entry<V> => ({ id: Buffer.from(ids.subarray(offset, offset + CHUNK_ID_BYTES)), value });
    if (slot === undefined) this.map.set(key, entry());
    else if (!Array.isArray(slot)) {
      if (sameId(slot.id, ids, offset)) return false;
      this.map.set(key, [slot, entry()]);
    } else {
      if (slot.some((e) => sameId(e.id, ids, offset))) return false;
      slot.push(entry());
    }
    this.count++;
    return true;
  }

  *values(): IterableIterator<V> {
    for (const slot of this.map.values()) {
      if (Array.isArray(slot)) for (const e of slot) yield e.value;
      else yield slot.value;
    }
  }
}

function sameId(id: Buffer, ids: Buffer, offset: number): boolean {
  return id.compare(ids, offset, offset + CHUNK_ID_BYTES) === 0;
}
