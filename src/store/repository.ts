import { randomBytes } from 'node:crypto';
import { blake3 } from '@napi-rs/blake-hash';
import { LifeboatError, isLifeboatError } from '../core/errors.js';
import type { Storage } from '../storage/storage.js';
import {
  aad,
  CHUNK_ID_BLAKE3_KEYED_128,
  CIPHER_AES_256_GCM,
  constantTimeEqualHex,
  DEFAULT_SCRYPT,
  deriveSlotKey,
  MasterKey,
  newRecoveryKey,
  open,
  parseRecoveryKey,
  seal,
  type KdfParams,
} from '../format/crypto.js';
import { CODEC_ZSTD } from '../format/codec.js';
import { configMacInput, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, parseStoreConfig, slotChecksumInput, type KeySlot, type StoreConfig } from '../format/store-config.js';
import { decodeDiskIndex, encodeDiskIndex, type DiskIndex } from '../format/disk-index.js';
import { parseManifest, type PointManifest } from '../format/manifest.js';
import { decodeIndex, encodeIndex, type ChunkRef, type PackHeader } from '../format/pack.js';
import { newTimeId, randomHex, DISK_NAME_PATTERN, TimeIdSequence } from '../format/ids.js';
import { ChunkIdMap } from './chunk-map.js';
import {
  CONFIG_KEY,
  INDEX_PREFIX,
  indexKey,
  KEYS_PREFIX,
  keySlotKey,
  parsePointKey,
  pointIndexKey,
  pointManifestKey,
  POINTS_PREFIX,
  pointsOfDiskPrefix,
} from '../format/layout.js';

export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };

/** Where a chunk lives: its pack and its place in a frame. */
export interface ChunkLocation {
  readonly pack: PackHeader;
  readonly chunk: ChunkRef;
}

export interface InitOptions {
  passphrase: string;
  chunkSizeBytes?: number;
  clock?: Clock;
  /** scrypt cost; tests lower it to stay fast. */
  scrypt?: { N: number; r: number; p: number };
}

/** The default chunk size; docs/benchmarks.md has the measurement behind it. */
export const DEFAULT_CHUNK_BYTES = 4096;

/**
 * An opened, unlocked store: the config, the master key, and typed access to
 * every kind of object. Operations (backup, restore, verify, prune, gc) take a
 * Repository; none of them touches storage keys directly.
 */
export class Repository {
  private chunkMap: ChunkIdMap<ChunkLocation> | undefined;
  private indexKeys: string[] = [];

  private constructor(
    readonly storage: Storage,
    readonly config: StoreConfig,
    readonly key: MasterKey,
    readonly clock: Clock,
  ) {}

  get chunkSizeBytes(): number {
    return this.config.chunkSizeBytes;
  }

  // ---- creation and unlocking ---------------------------------------------

  static async init(storage: Storage, options: InitOptions): Promise<{ repo: Repository; recoveryKey: string }> {
    const clock = options.clock ?? systemClock;
    const chunkSizeBytes = options.chunkSizeBytes ?? DEFAULT_CHUNK_BYTES;
    if (chunkSizeBytes < MIN_CHUNK_BYTES || chunkSizeBytes > MAX_CHUNK_BYTES || (chunkSizeBytes & (chunkSizeBytes - 1)) !== 0) {
      throw new LifeboatError('USAGE', `chunk size must be a power of two from ${MIN_CHUNK_BYTES} to ${MAX_CHUNK_BYTES} bytes`);
    }
    if (options.passphrase.length === 0) throw new LifeboatError('PASSPHRASE_REQUIRED', 'an empty passphrase is refused');
    if (await storage.stat(CONFIG_KEY)) throw new LifeboatError('STORE_EXISTS', `a store already exists at ${storage.url}`);
    const key = MasterKey.generate();
    const body = {
      format: 'lifeboat-store' as const,
      version: 1 as const,
      storeId: randomHex(16),
      chunkSizeBytes,
      chunkIdAlgorithm: CHUNK_ID_BLAKE3_KEYED_128,
      cipher: CIPHER_AES_256_GCM,
      codec: CODEC_ZSTD,
      createdAt: clock.now().toISOString(),
    };
    const config: StoreConfig = { ...body, mac: key.mac(configMacInput(body)) };
    const repo = new Repository(storage, config, key, clock);
    const scrypt = options.scrypt ?? DEFAULT_SCRYPT;
    // Key slots first, config last: a store exists once its config does, and then it can be opened.
    await repo.addKeySlot('passphrase', Buffer.from(options.passphrase, 'utf8'), { algorithm: 'scrypt', ...scrypt, saltHex: randomHex(16) });
    const recoveryKey = newRecoveryKey();
    await repo.addKeySlot('recovery', parseRecoveryKey(recoveryKey) as Buffer, { algorithm: 'hkdf-sha256', saltHex: randomHex(16) });
    await storage.put(CONFIG_KEY, Buffer.from(JSON.stringify(config, null, 2) + '\n'), { ifNoneMatch: true });
    return { repo, recoveryKey };
  }

  /** Opens a store with a passphrase or a recovery key. */
  static async open(storage: Storage, secret: string, options: { clock?: Clock } = {}): Promise<Repository> {
    let raw: Buffer;
    try {
      raw = await storage.get(CONFIG_KEY);
    } catch (err) {
      if (isLifeboatError(err, 'NOT_FOUND')) {
        throw new LifeboatError('STORE_NOT_INITIALIZED', `no Lifeboat store at ${storage.url}`, { cause: err });
      }
      throw err;
    }
    const config = parseStoreConfig(raw);
    // A damaged slot does not stop another, intact slot from opening the store: that is what the recovery key is for.
    const { slots, damaged } = await Repository.readKeySlots(storage);
    if (slots.length === 0 && damaged.length === 0) throw new LifeboatError('CORRUPT_OBJECT', 'the store has no key slots', { details: { object: KEYS_PREFIX } });
    if (slots.some((s) => s.storeId !== config.storeId)) {
      // The slots' checksums held, so the config's unauthenticated storeId is what changed.
      throw new LifeboatError('CORRUPT_OBJECT', 'store config names another store than its key slots (edited or damaged)', {
        details: { object: CONFIG_KEY },
      });
    }
    const recovery = parseRecoveryKey(secret);
    for (const slot of slots) {
      const material = recovery && slot.kind === 'recovery' ? recovery : slot.kind === 'passphrase' ? Buffer.from(secret, 'utf8') : undefined;
      if (!material) continue;
      const slotKey = await deriveSlotKey(material, slot.kdf);
      let master: Buffer;
      try {
        master = open(slotKey, Buffer.from(slot.wrappedKey, 'base64'), aad('keyslot', config.storeId, slot.slotId), `key slot ${slot.slotId}`, 64);
      } catch (err) {
        if (isLifeboatError(err, 'CORRUPT_OBJECT')) continue; // wrong secret for this slot
        throw err;
      }
      const key = new MasterKey(master);
      const { mac, ...body } = config;
      if (!constantTimeEqualHex(mac, key.mac(configMacInput(body)))) {
        throw new LifeboatError('CORRUPT_OBJECT', 'store config failed its authentication check (edited or damaged)', {
          details: { object: CONFIG_KEY },
        });
      }
      return new Repository(storage, config, key, options.clock ?? systemClock);
    }
    if (damaged[0]) throw damaged[0];
    throw new LifeboatError('WRONG_PASSPHRASE', 'the passphrase or recovery key opens no key slot of this store');
  }

  private static async readKeySlots(storage: Storage): Promise<{ slots: KeySlot[]; damaged: LifeboatError[] }> {
    const slots: KeySlot[] = [];
    const damaged: LifeboatError[] = [];
    for await (const info of storage.list(KEYS_PREFIX)) {
      const raw = await storage.get(info.key);
      let slot: KeySlot;
      try {
        slot = JSON.parse(raw.toString('utf8')) as KeySlot;
      } catch (err) {
        damaged.push(new LifeboatError('CORRUPT_OBJECT', `key slot ${info.key} is not JSON`, { cause: err, details: { object: info.key } }));
        continue;
      }
      const { checksum, ...rest } = slot;
      if (typeof checksum !== 'string' || blake3(slotChecksumInput(rest)).toString('hex') !== checksum) {
        damaged.push(new LifeboatError('CORRUPT_OBJECT', `key slot ${info.key} is damaged (checksum mismatch)`, { details: { object: info.key } }));
        continue;
      }
      slots.push(slot);
    }
    return { slots, damaged };
  }

  async addKeySlot(kind: KeySlot['kind'], secret: Buffer, kdf: KdfParams): Promise<string> {
    const slotId = randomHex(8);
    const slotKey = await deriveSlotKey(secret, kdf);
    const body = {
      version: 1 as const,
      storeId: this.config.storeId,
      slotId,
      kind,
      createdAt: this.clock.now().toISOString(),
      kdf,
      wrappedKey: seal(slotKey, this.key.material, aad('keyslot', this.config.storeId, slotId), false).toString('base64'),
    };
    const slot: KeySlot = { ...body, checksum: blake3(slotChecksumInput(body)).toString('hex') };
    await this.storage.put(keySlotKey(slotId), Buffer.from(JSON.stringify(slot, null, 2) + '\n'), { ifNoneMatch: true });
    return slotId;
  }

  /** Every key slot; CORRUPT_OBJECT for the first damaged one. */
  async keySlots(): Promise<KeySlot[]> {
    const { slots, damaged } = await Repository.readKeySlots(this.storage);
    if (damaged[0]) throw damaged[0];
    return slots;
  }

  // ---- sealed objects -----------------------------------------------------

  sealObject(objectKey: string, data: Buffer): Buffer {
    return seal(this.key.encKey, data, aad(this.config.storeId, objectKey));
  }

  openObject(objectKey: string, envelope: Buffer): Buffer {
    return open(this.key.encKey, envelope, aad(this.config.storeId, objectKey), objectKey);
  }

  async getSealed(objectKey: string, missing: 'NOT_FOUND' | 'MISSING_OBJECT' = 'MISSING_OBJECT'): Promise<Buffer> {
    let raw: Buffer;
    try {
      raw = await this.storage.get(objectKey);
    } catch (err) {
      if (isLifeboatError(err, 'NOT_FOUND')) {
        throw new LifeboatError(missing, `object ${objectKey} is missing from the store`, { cause: err, details: { object: objectKey } });
      }
      throw err;
    }
    return this.openObject(objectKey, raw);
  }

  async putSealed(objectKey: string, data: Buffer, ifNoneMatch = true): Promise<number> {
    const sealed = this.sealObject(objectKey, data);
    await this.storage.put(objectKey, sealed, { ifNoneMatch });
    return sealed.length;
  }

  // ---- chunk index --------------------------------------------------------

  /** Loads (once per Repository) every index object into a map from chunk id to location. */
  async chunkIndex(): Promise<ChunkIdMap<ChunkLocation>> {
    if (this.chunkMap) return this.chunkMap;
    const map = new ChunkIdMap<ChunkLocation>((loc) => loc.chunk.id);
    const keys: string[] = [];
    for await (const info of this.storage.list(INDEX_PREFIX)) {
      keys.push(info.key);
      for (const pack of decodeIndex(await this.getSealed(info.key), info.key)) addPack(map, pack);
    }
    this.chunkMap = map;
    this.indexKeys = keys;
    return map;
  }

  /** Index object keys seen by the last chunkIndex() load. */
  loadedIndexKeys(): readonly string[] {
    return this.indexKeys;
  }

  /** Drops the cached chunk index so the next chunkIndex() sees other writers' packs. */
  forgetChunkIndex(): void {
    this.chunkMap = undefined;
  }

  /** Writes one index object listing `packs` and adds them to the loaded map. */
  async writeIndex(packs: readonly PackHeader[]): Promise<string> {
    const key = indexKey(newTimeId(this.clock.now()));
    await this.putSealed(key, encodeIndex(packs));
    if (this.chunkMap) for (const pack of packs) addPack(this.chunkMap, pack);
    this.indexKeys.push(key);
    return key;
  }

  // ---- points -------------------------------------------------------------

  /** Every point's manifest, oldest first; `disk` narrows to one disk. */
  async listPoints(disk?: string): Promise<PointManifest[]> {
    if (disk !== undefined) checkDiskName(disk);
    const prefix = disk === undefined ? POINTS_PREFIX : pointsOfDiskPrefix(disk);
    const manifests: PointManifest[] = [];
    for await (const info of this.storage.list(prefix)) {
      const parsed = parsePointKey(info.key);
      if (parsed?.kind !== 'manifest') continue;
      manifests.push(await this.readManifestAt(info.key));
    }
    return manifests.sort((a, b) => (a.pointId < b.pointId ? -1 : a.pointId > b.pointId ? 1 : 0));
  }

  private async readManifestAt(key: string): Promise<PointManifest> {
    const m = parseManifest(await this.getSealed(key), key);
    const parsed = parsePointKey(key);
    if (!parsed || parsed.pointId !== m.pointId || parsed.disk !== m.disk) {
      throw new LifeboatError('CORRUPT_OBJECT', `${key} holds the manifest of another point`, { details: { object: key } });
    }
    return m;
  }

  /** Finds a point by id (or unique id prefix) across all disks. */
  async findPoint(pointId: string): Promise<PointManifest> {
    const wanted = pointId.toUpperCase();
    const matches: string[] = [];
    for await (const info of this.storage.list(POINTS_PREFIX)) {
      const parsed = parsePointKey(info.key);
      if (parsed?.kind === 'manifest' && parsed.pointId.startsWith(wanted)) matches.push(info.key);
    }
    if (matches.length === 0) throw new LifeboatError('NOT_FOUND', `no recovery point ${pointId}`, { details: { pointId } });
    if (matches.length > 1) throw new LifeboatError('USAGE', `point id prefix ${pointId} is ambiguous (${matches.length} points)`);
    return this.readManifestAt(matches[0] as string);
  }

  /** The ids of `disk`'s points, oldest first, from their object names alone (no manifest is read). */
  async listPointIds(disk: string): Promise<string[]> {
    checkDiskName(disk);
    const ids: string[] = [];
    for await (const info of this.storage.list(pointsOfDiskPrefix(disk))) {
      const parsed = parsePointKey(info.key);
      if (parsed?.kind === 'manifest') ids.push(parsed.pointId);
    }
    return ids.sort();
  }

  /** One point's manifest, read and authenticated (NOT_FOUND when the point is gone). */
  readPoint(disk: string, pointId: string): Promise<PointManifest> {
    checkDiskName(disk);
    return this.readManifestAt(pointManifestKey(disk, pointId));
  }

  /**
   * The newest point of `disk`: point ids sort by time (a child strictly after its
   * parent), so only the names are listed and one manifest is read — this runs for
   * every segment a process server stores and every processing pass.
   */
  async latestPoint(disk: string): Promise<PointManifest | undefined> {
    checkDiskName(disk);
    let newest: { key: string; pointId: string } | undefined;
    for await (const info of this.storage.list(pointsOfDiskPrefix(disk))) {
      const parsed = parsePointKey(info.key);
      if (parsed?.kind === 'manifest' && (!newest || parsed.pointId > newest.pointId)) newest = { key: info.key, pointId: parsed.pointId };
    }
    return newest && this.readManifestAt(newest.key);
  }

  async readPointIndex(manifest: PointManifest): Promise<DiskIndex> {
    const key = pointIndexKey(manifest.disk, manifest.pointId);
    const plain = await this.getSealed(key);
    if (blake3(plain).toString('hex') !== manifest.indexDigest) {
      throw new LifeboatError('CORRUPT_OBJECT', `${key} does not match its manifest's digest`, { details: { object: key } });
    }
    const index = decodeDiskIndex(plain, key);
    if (index.diskSizeBytes !== manifest.diskSizeBytes || index.chunkSizeBytes !== manifest.chunkSizeBytes) {
      throw new LifeboatError('CORRUPT_OBJECT', `${key} disagrees with its manifest on the disk geometry`, { details: { object: key } });
    }
    return index;
  }

  /**
   * Commits a point: index, then manifest (create-only, so two writers can never
   * both commit the same id). Data must already be stored and indexed.
   */
  async commitPoint(index: DiskIndex, fields: Omit<PointManifest, 'formatVersion' | 'indexDigest' | 'pointId' | 'createdAt'>): Promise<PointManifest> {
    const created = this.clock.now();
    // Strictly after the parent, so the newest point is always the last one listed.
    const pointId = pointIds.next(created, undefined, fields.parentPointId ?? undefined);
    const plain = encodeDiskIndex(index);
    const indexBytes = await this.putSealed(pointIndexKey(fields.disk, pointId), plain);
    const manifest: PointManifest = {
      formatVersion: 1,
      pointId,
      createdAt: created.toISOString(),
      indexDigest: blake3(plain).toString('hex'),
      ...fields,
      stats: { ...fields.stats, bytesStored: fields.stats.bytesStored + indexBytes },
    };
    await this.putSealed(pointManifestKey(fields.disk, pointId), Buffer.from(JSON.stringify(manifest)));
    return manifest;
  }

  /** Deletes a point in the reverse of write order: manifest first, then index. */
  async deletePoint(manifest: PointManifest): Promise<void> {
    await this.storage.delete(pointManifestKey(manifest.disk, manifest.pointId));
    await this.storage.delete(pointIndexKey(manifest.disk, manifest.pointId));
  }

  newPackId(): Buffer {
    return randomBytes(16);
  }
}

const pointIds = new TimeIdSequence();

function addPack(map: ChunkIdMap<ChunkLocation>, pack: PackHeader): void {
  for (const chunk of pack.chunks) map.add(chunk.id, 0, { pack, chunk });
}

export function checkDiskName(disk: string): void {
  if (!DISK_NAME_PATTERN.test(disk)) {
    throw new LifeboatError('USAGE', `disk name ${JSON.stringify(disk)} must be 1-128 of A-Z a-z 0-9 . _ - and start with a letter or digit`);
  }
}
