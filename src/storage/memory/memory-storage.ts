import { LifeboatError } from '../../core/errors.js';
import {
  checkKey,
  type ByteRange,
  type ObjectInfo,
  type PutOptions,
  type Storage,
  type StorageCapabilities,
} from '../storage.js';

interface Entry {
  data: Buffer;
  modifiedAt: Date;
}

/**
 * A store held in memory, for unit tests and the fault-injecting wrapper's base.
 * It keeps the whole contract, including conditional create. `now` is injectable
 * so tests can age objects past a safety margin without sleeping.
 */
export class MemoryStorage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities = { conditionalCreate: true, maxObjectSizeBytes: 5 * 2 ** 30 };
  private readonly objects = new Map<string, Entry>();
  private readonly now: () => Date;

  constructor(options: { url?: string; now?: () => Date } = {}) {
    this.url = options.url ?? 'memory://';
    this.now = options.now ?? (() => new Date());
  }

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    checkKey(key);
    if (options.ifNoneMatch && this.objects.has(key)) {
      throw new LifeboatError('STORAGE_PRECONDITION', `object ${key} already exists`, { details: { key } });
    }
    this.objects.set(key, { data: Buffer.from(data), modifiedAt: this.now() });
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    checkKey(key);
    const entry = this.objects.get(key);
    if (!entry) throw new LifeboatError('NOT_FOUND', `object ${key} not found`, { details: { key } });
    if (!range) return Buffer.from(entry.data);
    return Buffer.from(entry.data.subarray(range.offset, range.offset + range.length));
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    const entry = this.objects.get(key);
    return entry ? { key, sizeBytes: entry.data.length, modifiedAt: entry.modifiedAt } : undefined;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
    for (const key of keys) {
      const entry = this.objects.get(key);
      if (entry) yield { key, sizeBytes: entry.data.length, modifiedAt: entry.modifiedAt };
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    this.objects.delete(key);
  }

  async close(): Promise<void> {}

  /** Test hook: direct access to stored bytes, to flip or truncate them. */
  rawObject(key: string): Buffer | undefined {
    return this.objects.get(key)?.data;
  }

  /** Test hook: replace stored bytes without touching the modification time. */
  setRawObject(key: string, data: Buffer): void {
    const entry = this.objects.get(key);
    this.objects.set(key, { data, modifiedAt: entry?.modifiedAt ?? this.now() });
  }
}
