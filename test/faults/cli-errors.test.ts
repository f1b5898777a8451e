/**
 * Bad input, part 2: what an operator meets at the command line. Each failure
 * runs the real CLI (`node bin/lifeboat.js ... --json`) and must exit with the
 * code the error registry (src/core/errors.ts) documents for it, name the code
 * in the --json error object and on stderr, and change nothing it should not.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, isLifeboatError, type ErrorCode } from '../../src/core/errors.js';
import { decodeIndex } from '../../src/format/pack.js';
import { openStorage } from '../../src/storage/registry.js';
import type { Storage } from '../../src/storage/storage.js';
import { backupSource } from '../../src/store/backup.js';
import { DiskLock } from '../../src/store/disk-lock.js';
import { DiskFile } from '../../src/io/disk-file.js';
import { writeSegment } from '../../src/store/journal.js';
import { Repository } from '../../src/store/repository.js';
import { makeTempDir } from '../helpers/env.js';
import { seededBytes, sha256File, writeMixedImage, writeSparseImage } from '../helpers/images.js';
import { cliEnv, describeRun, flipped, jsonError, MiB, requireBuild, runCli, storeKeys, type CliResult } from './harness.js';

const PASS = 'cli errors passphrase';
const IMAGE_BYTES = 8 * MiB;

/** Asserts a failed run: registry exit code, the code in the --json error object and on stderr. */
function assertFails(r: CliResult, code: ErrorCode, what: string): void {
  const ctx = `${what}\n${describeRun(r)}`;
  assert.equal(r.code, ERROR_CODES[code].exitCode, `exit code of ${code} is ${ERROR_CODES[code].exitCode}: ${ctx}`);
  assert.equal(jsonError(r)?.code, code, `--json error object carries ${code}: ${ctx}`);
  assert.match(r.stderr, new RegExp(`\\b${code}\\b`), `stderr names ${code}: ${ctx}`);
}

describe('CLI errors exit with their documented codes', () => {
  let tmp: { path: string; cleanup: () => void };
  let storeDir: string;
  let url: string;
  let env: NodeJS.ProcessEnv;
  let img: string;
  let pointId: string;
  let pointSha: string;

  before(async () => {
    requireBuild();
    tmp = makeTempDir('fault-cli');
    storeDir = join(tmp.path, 'store');
    url = `file://${storeDir}`;
    env = cliEnv({ LIFEBOAT_STORE: url, LIFEBOAT_PASSPHRASE: PASS });
    const init = await runCli(['store', 'init', '--json'], env);
    assert.equal(init.code, 0, describeRun(init));
    img = join(tmp.path, 'vm1.img');
    writeMixedImage(img, IMAGE_BYTES, 5);
    const b = await runCli(['disk', 'backup', img, '--disk', 'vm1', '--json', '-q'], env);
    assert.equal(b.code, 0, describeRun(b));
    pointId = (b.json as { pointId: string }).pointId;
    pointSha = sha256File(img);
  });

  after(() => tmp?.cleanup());

  /** Runs `fn` with the store opened by the library (the real scrypt cost: a quarter second). */
  async function withLibrary<T>(fn: (repo: Repository, storage: Storage) => Promise<T>): Promise<T> {
    const storage = await openStorage(url);
    try {
      return await fn(await Repository.open(storage, PASS), storage);
    } finally {
      await storage.close();
    }
  }

  async function points(): Promise<string[]> {
    const r = await runCli(['point', 'list', '--json'], env);
    assert.equal(r.code, 0, describeRun(r));
    return (r.json as { pointId: string }[]).map((p) => p.pointId);
  }

  test('wrong passphrase: exit 5 WRONG_PASSPHRASE, from the environment and from --passphrase-file', async () => {
    assertFails(await runCli(['point', 'list', '--json'], { ...env, LIFEBOAT_PASSPHRASE: 'not the passphrase' }), 'WRONG_PASSPHRASE', 'LIFEBOAT_PASSPHRASE wrong');
    const file = join(tmp.path, 'wrong-pass');
    writeFileSync(file, 'also wrong\n');
    const r = await runCli(['point', 'list', '--json', '--passphrase-file', file], cliEnv({ LIFEBOAT_STORE: url }));
    assertFails(r, 'WRONG_PASSPHRASE', '--passphrase-file wrong');
    assert.match(r.stderr, /Try: /, 'a hint follows');
  });

  test('missing passphrase: exit 5 PASSPHRASE_REQUIRED (no variable, unreadable file, empty file)', async () => {
    assertFails(await runCli(['point', 'list', '--json'], cliEnv({ LIFEBOAT_STORE: url })), 'PASSPHRASE_REQUIRED', 'no passphrase at all');
    assertFails(
      await runCli(['point', 'list', '--json', '--passphrase-file', join(tmp.path, 'no-such-file')], cliEnv({ LIFEBOAT_STORE: url })),
      'PASSPHRASE_REQUIRED',
      'passphrase file missing',
    );
    const empty = join(tmp.path, 'empty-pass');
    writeFileSync(empty, '\n');
    assertFails(await runCli(['point', 'list', '--json', '--passphrase-file', empty], cliEnv({ LIFEBOAT_STORE: url })), 'PASSPHRASE_REQUIRED', 'passphrase file empty');
  });

  test('store not initialized: exit 3 STORE_NOT_INITIALIZED for an empty folder and a missing one', async () => {
    const empty = join(tmp.path, 'empty-store');
    mkdirSync(empty);
    for (const dir of [empty, join(tmp.path, 'never-made')]) {
      const r = await runCli(['point', 'list', '--json'], cliEnv({ LIFEBOAT_STORE: `file://${dir}`, LIFEBOAT_PASSPHRASE: PASS }));
      assertFails(r, 'STORE_NOT_INITIALIZED', dir);
      assert.match(r.stderr, /Try: lifeboat store init/);
    }
    assert.deepEqual(readdirSync(empty), [], 'opening wrote nothing into the empty folder');
  });

  test('init twice: exit 4 STORE_EXISTS and the store is unchanged', async () => {
    const config = readFileSync(join(storeDir, 'config'));
    const keys = storeKeys(storeDir);
    assertFails(await runCli(['store', 'init', '--json'], env), 'STORE_EXISTS', 'second init');
    assert.deepEqual(readFileSync(join(storeDir, 'config')), config);
    assert.deepEqual(storeKeys(storeDir), keys, 'no key slot was added');
    const r = await runCli(['point', 'list', '--json'], env);
    assert.equal(r.code, 0, `the original passphrase still opens the store: ${describeRun(r)}`);
  });

  test('flipped pack byte: `store verify --full` exit 6, `disk restore` exit 6 with the target absent or untouched', async () => {
    const packKey = storeKeys(storeDir).find((k) => k.startsWith('data/')) as string;
    const path = join(storeDir, ...packKey.split('/'));
    const original = readFileSync(path);
    // Byte 100 lies in the first frame (frames start at 0 and are tens of KiB long).
    const frameLen = await withLibrary(async (repo) => {
      for await (const info of repo.storage.list('index/')) for (const h of decodeIndex(await repo.getSealed(info.key), info.key)) return h.frames[0]?.length ?? 0;
      return 0;
    });
    assert.ok(frameLen > 100, `first frame is ${frameLen} bytes`);
    writeFileSync(path, flipped(original, 100, 0x40));
    try {
      const v = await runCli(['store', 'verify', '--full', '--json', '-q'], env);
      assert.equal(v.code, ERROR_CODES.CORRUPT_OBJECT.exitCode, describeRun(v));
      assert.ok(v.stdout.includes(packKey) && v.stdout.includes('CORRUPT_OBJECT'), `verify names the pack and the code: ${describeRun(v)}`);

      const absent = join(tmp.path, 'restore-absent.img');
      assertFails(await runCli(['disk', 'restore', pointId, '--to', absent, '--json', '-q'], env), 'CORRUPT_OBJECT', 'restore to a new file');
      assert.equal(existsSync(absent), false, 'no target file was created');

      const present = join(tmp.path, 'restore-present.img');
      writeFileSync(present, seededBytes(123_457, 9));
      const before = createHash('sha256').update(readFileSync(present)).digest('hex');
      assertFails(await runCli(['disk', 'restore', pointId, '--to', present, '--json', '-q'], env), 'CORRUPT_OBJECT', 'restore over an existing file');
      assert.equal(sha256File(present), before, 'the existing target is left untouched');
      assert.deepEqual(readdirSync(tmp.path).filter((n) => n.includes('lifeboat-tmp')), [], 'no temporary restore file is left');
    } finally {
      writeFileSync(path, original);
    }
    const r = await runCli(['disk', 'restore', pointId, '--to', join(tmp.path, 'restore-ok.img'), '--json', '-q'], env);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(sha256File(join(tmp.path, 'restore-ok.img')), pointSha);
  });

  test('journal sequence gap: `journal process` exit 7 JOURNAL_GAP naming the missing sequence, nothing committed', async () => {
    await withLibrary(async (repo) => {
      for (const seq of [1, 2, 4]) {
        await writeSegment(repo, 'jdisk', { generation: 0, sequence: seq, diskSizeBytes: MiB, extents: [{ offset: seq * 4096, data: seededBytes(4096, seq) }] });
      }
    });
    const r = await runCli(['journal', 'process', 'jdisk', '--json'], env);
    assertFails(r, 'JOURNAL_GAP', 'segments 1, 2, 4');
    assert.deepEqual(jsonError(r)?.details?.missing, [3], 'the missing sequence is named');
    assert.match(r.stderr, /missing sequence 3\b/);
    assert.deepEqual((await points()).filter((p) => p !== pointId), [], 'no point was committed');
    assert.equal(existsSync(join(storeDir, 'locks', 'jdisk')), false, 'the disk lock was released');
  });

  test('a second writer on the same disk: `disk backup` exit 8 DISK_LOCKED while a library writer holds the lock', async () => {
    await withLibrary(async (repo) => {
      const lock = await DiskLock.acquire(repo, 'vm1', 'fault-test-holder');
      try {
        const r = await runCli(['disk', 'backup', img, '--disk', 'vm1', '--json', '-q'], env);
        assertFails(r, 'DISK_LOCKED', 'backup while locked');
        assert.match(r.stderr, /fault-test-holder/, 'the holder is named');
        assert.match(r.stderr, /Try: .*--break-lock/);
        await lock.check(); // the refused writer did not take or break the lock
      } finally {
        await lock.release();
      }
    });
    assert.deepEqual(await points(), [pointId], 'no point was committed');
  });

  test('vanished source: a missing path exits 3 NOT_FOUND, a non-file exits 9 SOURCE_UNREADABLE, both naming the path', async () => {
    const gone = join(tmp.path, 'vanished.img');
    const r = await runCli(['disk', 'backup', gone, '--disk', 'vm1', '--json', '-q'], env);
    assertFails(r, 'NOT_FOUND', 'missing source');
    assert.ok(r.stderr.includes(gone), `the message names ${gone}: ${r.stderr}`);
    const dir = join(tmp.path, 'a-directory');
    mkdirSync(dir);
    const d = await runCli(['disk', 'backup', dir, '--disk', 'vm1', '--json', '-q'], env);
    assertFails(d, 'SOURCE_UNREADABLE', 'directory as source');
    assert.ok(d.stderr.includes(dir), `the message names ${dir}: ${d.stderr}`);
    assert.deepEqual(await points(), [pointId], 'no point was committed');
    assert.equal(existsSync(join(storeDir, 'locks', 'vm1')), false, 'no lock is left behind');
  });

  test('a source that shrinks to nothing after it was opened fails SOURCE_UNREADABLE, never an all-zero point', async () => {
    // Deterministic stand-in for a device that vanishes mid-backup: the source is opened
    // (its size taken), then the file is cut to 0 bytes before any extent is read.
    const shrinking = join(tmp.path, 'shrinking.img');
    writeSparseImage(shrinking, 4 * MiB, [{ offset: 0, data: seededBytes(2 * MiB, 3) }]);
    const outcome = await withLibrary(async (repo) => {
      const source = await DiskFile.open(shrinking);
      truncateSync(shrinking, 0);
      try {
        const r = await backupSource(repo, source, { disk: 'shrinking' });
        return { committed: r.manifest.pointId, dataChunks: r.manifest.stats.dataChunks };
      } catch (err) {
        return { code: isLifeboatError(err) ? err.code : String(err) };
      } finally {
        await source.close();
      }
    });
    assert.deepEqual(outcome, { code: 'SOURCE_UNREADABLE' }, 'a backup of a source that lost its data must fail, not commit zeros');
  });

  test('unknown URL scheme: exit 2 UNSUPPORTED_SCHEME (and memory: is refused outside tests)', async () => {
    for (const store of ['ftp://example.invalid/store', 'memory://x']) {
      assertFails(await runCli(['point', 'list', '--json', '--store', store], env), 'UNSUPPORTED_SCHEME', store);
    }
  });

  test('malformed arguments: exit 2 USAGE', async () => {
    const cases: [string, string[]][] = [
      ['bad duration', ['store', 'gc', '--safety-margin', '5x', '--json']],
      ['bad --keep-last', ['store', 'prune', '--keep-last', 'many', '--json']],
      ['prune without a rule', ['store', 'prune', '--json']],
      ['bad --consistency', ['disk', 'backup', img, '--consistency', 'maybe', '--json']],
      ['bad disk name', ['disk', 'backup', img, '--disk', '../etc', '--json']],
      ['bad chunk size', ['store', 'init', '--chunk-size', '3000', '--json', '--store', `file://${join(tmp.path, 'new-store')}`]],
      ['no store given', ['point', 'list', '--json', '--store', '']],
      ['unknown option', ['point', 'list', '--json', '--frobnicate']],
      ['missing required option', ['disk', 'restore', pointId, '--json']],
      ['missing argument', ['disk', 'backup', '--json']],
      ['unknown command', ['disk', 'teleport', '--json']],
    ];
    const bad: string[] = [];
    for (const [what, args] of cases) {
      const r = await runCli(args, what === 'no store given' ? cliEnv({ LIFEBOAT_PASSPHRASE: PASS }) : env);
      try {
        assertFails(r, 'USAGE', what);
      } catch (err) {
        bad.push(`${what} (lifeboat ${args.join(' ')}): ${(err as Error).message.split('\n').slice(0, 9).join('\n    ')}`);
      }
    }
    assert.deepEqual(bad, [], `malformed arguments must exit 2 and carry USAGE in --json and on stderr:\n${bad.join('\n')}`);
    assert.equal(existsSync(join(tmp.path, 'new-store')), false, 'a refused init writes nothing');
    assert.deepEqual(await points(), [pointId]);
  });
});
