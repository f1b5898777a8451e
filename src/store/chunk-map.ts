import { CHUNK_ID_BYTES } from '../format/crypto.js';

interface Entry<V> {
  readonly id: Buffer;
  readonly value: V;
}

/**
 * A map from 16-byte chunk ids to values, built for millions of entries: keys
 * are the id's first 30 bits (a small integer V8 stores unboxed), with the full
 * id compared on lookup, so lookups allocate nothing. Ids are keyed hashes,
 * hence uniformly spread. When the value carries its own id (`idOf`), the map
 * stores only the value.
 */
export class ChunkIdMap<V> {
  private readonly map = new Map<number, Entry<V> | Entry<V>[] | V | V[]>();
  private count = 0;

  constructor(private readonly idOf?: (value: V) => Buffer) {}

  get size(): number {
    return this.count;
  }

  private idOfSlot(e: Entry<V> | V): Buffer {
    return this.idOf ? this.idOf(e as V) : (e as Entry<V>).id;
  }

  private valueOfSlot(e: Entry<V> | V): V {
    return this.idOf ? (e as V) : (e as Entry<V>).value;
  }

  /** Looks up the id stored at `ids[offset, offset+16)`. */
  get(ids: Buffer, offset = 0): V | undefined {
    const slot = this.map.get(ids.readUInt32LE(offset) & 0x3fffffff);
    if (slot === undefined) return undefined;
    if (!Array.isArray(slot)) return sameId(this.idOfSlot(slot), ids, offset) ? this.valueOfSlot(slot) : undefined;
    for (const e of slot as (Entry<V> | V)[]) if (sameId(this.idOfSlot(e), ids, offset)) return this.valueOfSlot(e);
    return undefined;
  }

  has(ids: Buffer, offset = 0): boolean {
    return this.get(ids, offset) !== undefined;
  }

  /** Adds the id unless present; returns false when it was already there (the old value stays). */
  add(ids: Buffer, offset: number, value: V): boolean {
    const key = ids.readUInt32LE(offset) & 0x3fffffff;
    const slot = this.map.get(key);
    const entry = (): Entry<V> | V => (this.idOf ? value : { id: Buffer.from(ids.subarray(offset, offset + CHUNK_ID_BYTES)), value });
    if (slot === undefined) this.map.set(key, entry());
    else if (!Array.isArray(slot)) {
      if (sameId(this.idOfSlot(slot), ids, offset)) return false;
      this.map.set(key, [slot, entry()] as Entry<V>[]);
    } else {
      const list = slot as (Entry<V> | V)[];
      if (list.some((e) => sameId(this.idOfSlot(e), ids, offset))) return false;
      list.push(entry());
    }
    this.count++;
    return true;
  }
}

function sameId(id: Buffer, ids: Buffer, offset: number): boolean {
  return id.compare(ids, offset, offset + CHUNK_ID_BYTES) === 0;
}
