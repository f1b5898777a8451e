import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Repository } from '../../src/store/repository.js';
import { CONFIG_KEY, KEYS_PREFIX } from '../../src/format/layout.js';
import { configMacInput, parseStoreConfig, type StoreConfig } from '../../src/format/store-config.js';
import { parseManifest, type PointManifest } from '../../src/format/manifest.js';
import { listAll } from '../../src/storage/storage.js';
import { memoryRepo, PASS } from '../helpers/store.js';
import { decodesOrRefuses, rejectsCode, throwsCode } from './fuzz.js';

function configOf(raw: Buffer | undefined): StoreConfig & Record<string, unknown> {
  assert.ok(raw, 'no config object');
  return JSON.parse(raw.toString('utf8')) as StoreConfig & Record<string, unknown>;
}

test('the config MAC covers every field but itself, in a fixed order', () => {
  const base = {
    format: 'lifeboat-store' as const,
    version: 1 as const,
    storeId: '0'.repeat(32),
    chunkSizeBytes: 4096,
    chunkIdAlgorithm: 1,
    cipher: 1,
    codec: 1,
    createdAt: '2026-11-01T00:00:00.000Z',
  };
  const inputs = new Set<string>([configMacInput(base)]);
  const edits: Partial<Record<keyof typeof base, unknown>> = {
    storeId: '1'.repeat(32),
    chunkSizeBytes: 8192,
    chunkIdAlgorithm: 2,
    cipher: 2,
    codec: 0,
    createdAt: '2026-11-01T00:00:00.001Z',
  };
  for (const [field, value] of Object.entries(edits)) inputs.add(configMacInput({ ...base, [field]: value } as typeof base));
  assert.equal(inputs.size, 1 + Object.keys(edits).length);
  // Property order in the JSON object does not change the MAC input.
  const reordered = Object.fromEntries(Object.entries(base).reverse()) as typeof base;
  assert.equal(configMacInput(reordered), configMacInput(base));
});

test('a store whose config was edited refuses to open (CORRUPT_OBJECT), the untouched one opens', async () => {
  const { storage } = await memoryRepo();
  const original = storage.rawObject(CONFIG_KEY) as Buffer;
  const cfg = configOf(original);
  await Repository.open(storage, PASS); // sanity: opens as written
  const edits: Record<string, unknown>[] = [
    { chunkSizeBytes: 8192 },
    { chunkSizeBytes: 1048576 },
    { createdAt: '2020-01-01T00:00:00.000Z' },
    { codec: 0 },
    { cipher: 2 },
    { chunkIdAlgorithm: 2 },
    { mac: '0'.repeat(64) },
    { mac: cfg.mac.slice(0, 63) + (cfg.mac.endsWith('0') ? '1' : '0') },
    { mac: 'not hex' },
  ];
  for (const edit of edits) {
    storage.setRawObject(CONFIG_KEY, Buffer.from(JSON.stringify({ ...cfg, ...edit })));
    await rejectsCode(Repository.open(storage, PASS), 'CORRUPT_OBJECT');
  }
  // Re-serialising the same values (other whitespace) is not an edit.
  storage.setRawObject(CONFIG_KEY, Buffer.from(JSON.stringify(cfg)));
  const repo = await Repository.open(storage, PASS);
  assert.equal(repo.config.storeId, cfg.storeId);
  storage.setRawObject(CONFIG_KEY, original);
});

test('a config whose storeId was edited is reported as damage, not as a wrong passphrase', async () => {
  const { storage } = await memoryRepo();
  const cfg = configOf(storage.rawObject(CONFIG_KEY));
  const other = (cfg.storeId.startsWith('0') ? '1' : '0') + cfg.storeId.slice(1);
  storage.setRawObject(CONFIG_KEY, Buffer.from(JSON.stringify({ ...cfg, storeId: other })));
  await rejectsCode(Repository.open(storage, PASS), 'CORRUPT_OBJECT');
});

test('a config from a newer format version is STORE_UNSUPPORTED_VERSION', async () => {
  const { storage } = await memoryRepo();
  const cfg = configOf(storage.rawObject(CONFIG_KEY));
  storage.setRawObject(CONFIG_KEY, Buffer.from(JSON.stringify({ ...cfg, version: 2 })));
  await rejectsCode(Repository.open(storage, PASS), 'STORE_UNSUPPORTED_VERSION');
});

test('a damaged key slot is CORRUPT_OBJECT, not a wrong passphrase; the other slot still opens the store', async () => {
  const { storage, recoveryKey } = await memoryRepo();
  const slots = await listAll(storage, KEYS_PREFIX);
  const slot = slots.find((s) => (JSON.parse((storage.rawObject(s.key) as Buffer).toString('utf8')) as { kind: string }).kind === 'passphrase');
  assert.ok(slot);
  const json = JSON.parse((storage.rawObject(slot.key) as Buffer).toString('utf8')) as Record<string, unknown>;
  storage.setRawObject(slot.key, Buffer.from(JSON.stringify({ ...json, createdAt: '2000-01-01T00:00:00.000Z' })));
  await rejectsCode(Repository.open(storage, PASS), 'CORRUPT_OBJECT');
  const viaRecovery = await Repository.open(storage, recoveryKey);
  await rejectsCode(viaRecovery.keySlots(), 'CORRUPT_OBJECT');
  storage.setRawObject(slot.key, Buffer.from('{ not json'));
  await rejectsCode(Repository.open(storage, PASS), 'CORRUPT_OBJECT');
});

test('parseStoreConfig given garbage only refuses', async () => {
  const { storage } = await memoryRepo();
  const cfg = configOf(storage.rawObject(CONFIG_KEY));
  assert.deepEqual(parseStoreConfig(Buffer.from(JSON.stringify(cfg))), cfg);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => decodesOrRefuses(() => parseStoreConfig(Buffer.from(raw)))),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.jsonValue(), (v) => decodesOrRefuses(() => parseStoreConfig(Buffer.from(JSON.stringify(v) ?? 'null')))),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.constantFrom(...Object.keys(cfg)), fc.jsonValue(), (field, v) =>
      decodesOrRefuses(() => parseStoreConfig(Buffer.from(JSON.stringify({ ...cfg, [field]: v })))),
    ),
    { numRuns: 500 },
  );
  for (const size of [0, 1000, 4095, 6000, 8 * 2 ** 20]) {
    throwsCode(() => parseStoreConfig(Buffer.from(JSON.stringify({ ...cfg, chunkSizeBytes: size }))), 'CORRUPT_OBJECT');
  }
});

test('parseManifest given garbage or a manifest with one field replaced only refuses', () => {
  const good: PointManifest = {
    formatVersion: 1,
    pointId: '01JBX8Z7K9Q3M4N5P6R7S8T9VW',
    disk: 'vm1',
    diskSizeBytes: 1 << 20,
    chunkSizeBytes: 4096,
    createdAt: '2026-11-01T00:00:00.000Z',
    consistency: 'crash',
    parentPointId: null,
    source: { generation: 0, lastSequence: 0 },
    origin: 'backup',
    indexDigest: 'ab'.repeat(32),
    stats: { dataChunks: 1, zeroChunks: 255, newChunks: 1, bytesRead: 4096, bytesStored: 100 },
  };
  assert.deepEqual(parseManifest(Buffer.from(JSON.stringify(good)), 'm'), good);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => decodesOrRefuses(() => parseManifest(Buffer.from(raw), 'm'))),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.constantFrom(...Object.keys(good)), fc.jsonValue(), (field, v) =>
      decodesOrRefuses(() => parseManifest(Buffer.from(JSON.stringify({ ...good, [field]: v })), 'm')),
    ),
    { numRuns: 1000 },
  );
  throwsCode(() => parseManifest(Buffer.from(JSON.stringify({ ...good, formatVersion: 2 })), 'm'), 'STORE_UNSUPPORTED_VERSION');
  for (const field of ['pointId', 'disk', 'diskSizeBytes', 'chunkSizeBytes', 'createdAt', 'consistency', 'source', 'indexDigest'] as const) {
    const { [field]: _dropped, ...rest } = good;
    throwsCode(() => parseManifest(Buffer.from(JSON.stringify(rest)), 'm'), 'CORRUPT_OBJECT');
  }
});
