import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backupSource } from '../../src/store/backup.js';
import { Repository } from '../../src/store/repository.js';
import { DATA_PREFIX, INDEX_PREFIX, KEYS_PREFIX } from '../../src/format/layout.js';
import { decodeIndex } from '../../src/format/pack.js';
import { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { listAll } from '../../src/storage/storage.js';
import { seededBytes, textBlock } from '../helpers/images.js';
import { memoryRepo, PASS, TEST_SCRYPT } from '../helpers/store.js';
import { rejectsCode } from '../format/fuzz.js';
import { MemorySource, readPoint } from './memory-source.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Chunks stored in the whole store, counted from its index objects. */
async function storedChunks(repo: Repository): Promise<number> {
  let n = 0;
  for (const info of await listAll(repo.storage, INDEX_PREFIX)) for (const h of decodeIndex(await repo.getSealed(info.key), info.key)) n += h.chunks.length;
  return n;
}

test('an empty (0-byte) disk backs up and reads back as empty', async () => {
  const { repo, storage } = await memoryRepo();
  const res = await backupSource(repo, new MemorySource(Buffer.alloc(0)), { disk: 'empty' });
  assert.equal(res.manifest.diskSizeBytes, 0);
  assert.equal(res.newChunks + res.reusedChunks + res.zeroChunks, 0);
  assert.equal((await listAll(storage, DATA_PREFIX)).length, 0);
  const reopened = await Repository.open(storage, PASS);
  const [m] = await reopened.listPoints('empty');
  assert.ok(m);
  assert.equal((await readPoint(reopened, m)).length, 0);
  // Incremental over an empty parent.
  const again = await backupSource(reopened, new MemorySource(Buffer.alloc(0)), { disk: 'empty' });
  assert.equal(again.manifest.parentPointId, m.pointId);
});

test('a disk whose size is not a multiple of the chunk size round-trips, last partial chunk included', async () => {
  const { repo } = await memoryRepo({ chunkSizeBytes: 4 * KiB });
  for (const size of [1, 4 * KiB - 1, 4 * KiB + 1, 37 * 4 * KiB + 123]) {
    const bytes = seededBytes(size + 4, size).subarray(0, size);
    const res = await backupSource(repo, new MemorySource(Buffer.from(bytes)), { disk: `odd-${size}` });
    assert.equal(res.manifest.diskSizeBytes, size);
    assert.equal(res.newChunks, Math.ceil(size / (4 * KiB)));
    assert.ok((await readPoint(repo, res.manifest)).equals(bytes), `size ${size}`);
  }
  // A partial last chunk is not confused with a full chunk starting with the same bytes.
  const full = seededBytes(8 * KiB, 5);
  const a = await backupSource(repo, new MemorySource(Buffer.from(full)), { disk: 'full' });
  const b = await backupSource(repo, new MemorySource(Buffer.from(full.subarray(0, 6 * KiB))), { disk: 'cut' });
  assert.equal(a.newChunks, 2);
  assert.equal(b.newChunks, 1, 'the partial chunk is new, the first one is reused');
  assert.ok((await readPoint(repo, b.manifest)).equals(full.subarray(0, 6 * KiB)));
});

test('a fully sparse or all-zero disk stores nothing but its index', async () => {
  const { repo, storage } = await memoryRepo();
  const size = 64 * MiB + 512;
  const holes = await backupSource(repo, new MemorySource(Buffer.alloc(size), []), { disk: 'sparse' });
  assert.equal(holes.newChunks, 0);
  assert.equal(holes.bytesRead, 0, 'holes were read');
  assert.equal(holes.zeroChunks, Math.ceil(size / (4 * KiB)));
  const zeros = await backupSource(repo, new MemorySource(Buffer.alloc(4 * MiB + 7)), { disk: 'zeros' });
  assert.equal(zeros.newChunks, 0);
  assert.equal(zeros.manifest.stats.dataChunks, 0);
  assert.equal((await listAll(storage, DATA_PREFIX)).length, 0);
  assert.equal((await listAll(storage, INDEX_PREFIX)).length, 0);
  // The index of a 64 MiB sparse disk compresses to almost nothing.
  assert.ok(holes.bytesStored < 4 * KiB, `stored ${holes.bytesStored}`);
  const back = await readPoint(repo, holes.manifest, 16 * MiB);
  assert.equal(back.length, size);
  assert.ok(back.every((b) => b === 0));
});

test('one chunk repeated at many offsets is stored once', async () => {
  const { repo } = await memoryRepo();
  const block = seededBytes(4 * KiB, 11);
  const size = 200 * 4 * KiB;
  const bytes = Buffer.alloc(size);
  const slots = [0, 1, 2, 7, 8, 50, 51, 99, 100, 150, 198, 199];
  for (const s of slots) block.copy(bytes, s * 4 * KiB);
  const res = await backupSource(repo, new MemorySource(bytes), { disk: 'rep' });
  assert.equal(await storedChunks(repo), 1);
  assert.ok(res.bytesStored < 8 * KiB, `stored ${res.bytesStored}`);
  assert.ok((await readPoint(repo, res.manifest)).equals(bytes));
  assert.equal(res.zeroChunks, 200 - slots.length);
  // The statistics a user sees must agree with what was stored.
  assert.equal(res.newChunks, 1, 'repeats inside one batch are counted as new chunks');
  assert.equal(res.reusedChunks, slots.length - 1);
  assert.equal(res.manifest.stats.newChunks, 1);
});

test('two disks sharing data are deduplicated across disks', async () => {
  const { repo, storage } = await memoryRepo();
  const common = Buffer.concat([seededBytes(32 * 4 * KiB, 21), textBlock(16 * 4 * KiB, 3)]);
  const a = Buffer.concat([common, seededBytes(8 * 4 * KiB, 22)]);
  const b = Buffer.concat([seededBytes(4 * 4 * KiB, 23), common]);
  const ra = await backupSource(repo, new MemorySource(a), { disk: 'a' });
  assert.equal(ra.newChunks, 56);
  const before = await storedChunks(repo);
  const reopened = await Repository.open(storage, PASS);
  const rb = await backupSource(reopened, new MemorySource(b), { disk: 'b' });
  assert.equal(rb.manifest.parentPointId, null, 'a point of another disk is not a parent');
  assert.equal(rb.newChunks, 4);
  assert.equal(rb.reusedChunks, 48);
  assert.equal(await storedChunks(reopened), before + 4);
  // The same disk twice: nothing new at all.
  const rb2 = await backupSource(reopened, new MemorySource(b), { disk: 'b' });
  assert.equal(rb2.newChunks, 0);
  assert.ok((await readPoint(reopened, ra.manifest)).equals(a));
  assert.ok((await readPoint(reopened, rb.manifest)).equals(b));
});

for (const chunkSizeBytes of [4 * KiB, 64 * KiB, MiB]) {
  test(`chunk size ${chunkSizeBytes / KiB} KiB round-trips a mixed image`, async () => {
    const { repo, storage } = await memoryRepo({ chunkSizeBytes });
    const size = 3 * MiB + 5 * KiB + 17;
    const bytes = Buffer.alloc(size);
    const allocated = [
      { offset: 0, length: MiB + 100 },
      { offset: 2 * MiB + 3, length: 300 * KiB },
      { offset: size - 9 * KiB, length: 9 * KiB },
    ];
    seededBytes(MiB + 100, 1).copy(bytes, 0);
    textBlock(300 * KiB, 2).copy(bytes, 2 * MiB + 3);
    seededBytes(9 * KiB, 3).copy(bytes, size - 9 * KiB);
    const res = await backupSource(repo, new MemorySource(bytes, allocated), { disk: 'mixed' });
    assert.equal(res.manifest.chunkSizeBytes, chunkSizeBytes);
    const reopened = await Repository.open(storage, PASS);
    assert.equal(reopened.chunkSizeBytes, chunkSizeBytes);
    const [m] = await reopened.listPoints('mixed');
    assert.ok((await readPoint(reopened, m!, 100 * KiB + 3)).equals(bytes));
    // Unaligned small reads too.
    const r = await readPoint(reopened, m!, 4093);
    assert.ok(r.equals(bytes));
  });
}

test('the recovery key opens the store; a wrong passphrase or key does not', async () => {
  const { repo, storage, recoveryKey } = await memoryRepo();
  const bytes = seededBytes(10 * 4 * KiB, 5);
  const { manifest } = await backupSource(repo, new MemorySource(bytes), { disk: 'vm1' });
  for (const secret of [recoveryKey, recoveryKey.toLowerCase(), recoveryKey.replace(/-/g, ' ')]) {
    const viaKey = await Repository.open(storage, secret);
    assert.equal(viaKey.config.storeId, repo.config.storeId);
    assert.ok((await readPoint(viaKey, manifest)).equals(bytes));
  }
  await rejectsCode(Repository.open(storage, 'wrong passphrase'), 'WRONG_PASSPHRASE');
  await rejectsCode(Repository.open(storage, PASS + ' '), 'WRONG_PASSPHRASE');
  // The recovery key of another store is well formed but opens nothing here.
  const other = await memoryRepo();
  await rejectsCode(Repository.open(storage, other.recoveryKey), 'WRONG_PASSPHRASE');
  // The recovery key is not a passphrase slot's secret the other way round.
  await rejectsCode(Repository.open(other.storage, PASS + 'x'), 'WRONG_PASSPHRASE');
});

test('init twice is STORE_EXISTS and leaves the first store intact; open of nothing is STORE_NOT_INITIALIZED', async () => {
  const { storage } = await memoryRepo();
  const slots = (await listAll(storage, KEYS_PREFIX)).length;
  await rejectsCode(Repository.init(storage, { passphrase: 'another', scrypt: TEST_SCRYPT }), 'STORE_EXISTS');
  assert.equal((await listAll(storage, KEYS_PREFIX)).length, slots, 'a second init added key slots');
  await Repository.open(storage, PASS);
  await rejectsCode(Repository.open(storage, 'another'), 'WRONG_PASSPHRASE');
  await rejectsCode(Repository.open(new MemoryStorage(), PASS), 'STORE_NOT_INITIALIZED');
  await rejectsCode(Repository.init(new MemoryStorage(), { passphrase: '', scrypt: TEST_SCRYPT }), 'PASSPHRASE_REQUIRED');
  for (const chunkSizeBytes of [0, 1000, 2048, 8 * MiB]) {
    await rejectsCode(Repository.init(new MemoryStorage(), { passphrase: PASS, scrypt: TEST_SCRYPT, chunkSizeBytes }), 'USAGE');
  }
});
