/**
 * Bad input, part 1: damaged stored objects. Every kind of object a store holds
 * (config, key slots, index objects, packs, point indexes, manifests, journal
 * segments) gets one byte flipped at several seeded positions, gets truncated,
 * or goes missing; the store must then say so, and by name:
 *
 * - config / key slot damage: opening fails with CORRUPT_OBJECT, never with
 *   WRONG_PASSPHRASE (which would send the operator hunting for a passphrase);
 * - any other object: `verify --full` reports a problem naming it;
 * - restoring a point that needs the damaged bytes fails with CORRUPT_OBJECT
 *   (MISSING_OBJECT when deleted) and leaves no target file; a point that does
 *   not need them restores bit for bit or fails loudly, never wrong bytes;
 * - putting the byte back leaves every object as it was and verify clean.
 *
 * A flip that leaves a JSON object's value unchanged (hex case of the config
 * MAC, whitespace) is not damage: the store must then simply open.
 *
 * Positions are seeded (LIFEBOAT_FAULT_SEED replays another seed); failures
 * are collected and reported together, so one run lists every bad case.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync, truncateSync, unlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isLifeboatError, type ErrorCode } from '../../src/core/errors.js';
import { isZeroId } from '../../src/format/disk-index.js';
import { decodeIndex, type PackHeader } from '../../src/format/pack.js';
import { CHUNK_ID_BYTES } from '../../src/format/crypto.js';
import { packKey, pointIndexKey, pointManifestKey } from '../../src/format/layout.js';
import type { PointManifest } from '../../src/format/manifest.js';
import type { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { openStorage } from '../../src/storage/registry.js';
import { backupPath } from '../../src/store/backup.js';
import { processJournal, writeSegment } from '../../src/store/journal.js';
import { PointReader } from '../../src/store/point-reader.js';
import { Repository } from '../../src/store/repository.js';
import { writeDisk } from '../../src/store/restore.js';
import { verifyStore, type VerifyReport } from '../../src/store/verify.js';
import { makeTempDir } from '../helpers/env.js';
import { seededBytes, sha256File, writeMixedImage } from '../helpers/images.js';
import { memoryRepo, PASS } from '../helpers/store.js';
import {
  cliEnv,
  describeRun,
  faultSeed,
  flipped,
  jsonError,
  kindOf,
  MiB,
  requireBuild,
  Rng,
  runCli,
  seededScribble,
  storeKeys,
  type CliResult,
  type ObjectKind,
} from './harness.js';

const SEED = faultSeed(20261101);
/** Larger than writeMixedImage's regions (they reach 7 MiB), with a partial last chunk. */
const IMAGE_BYTES = 8 * MiB + 6000;
const DISK = 'vm1';

interface PointFacts {
  readonly manifest: PointManifest;
  readonly sha: string;
  /** Hex id of every stored chunk the point needs. */
  readonly chunks: Set<string>;
}

interface Fixture {
  readonly storage: MemoryStorage;
  readonly recoveryKey: string;
  readonly points: PointFacts[];
  /** Pack key -> header, as the index objects list it. */
  readonly packs: Map<string, PackHeader>;
  /** Index object key -> pack keys it lists. */
  readonly indexPacks: Map<string, string[]>;
  readonly segmentKeys: string[];
}

/** Two points of a mixed image (the second after seeded scribbles) and three journal segments. */
async function buildFixture(dir: string, rng: Rng): Promise<Fixture> {
  const { storage, repo, recoveryKey } = await memoryRepo();
  const img = join(dir, 'disk.img');
  writeMixedImage(img, IMAGE_BYTES, 7);
  const first = await backupPath(repo, img, { disk: DISK });
  const sha1 = sha256File(img);
  seededScribble(img, IMAGE_BYTES, 24, rng);
  const second = await backupPath(repo, img, { disk: DISK });
  const sha2 = sha256File(img);
  const segmentKeys: string[] = [];
  for (let seq = 1; seq <= 3; seq++) {
    const extents = [0, 1].map(() => ({ offset: rng.int(IMAGE_BYTES - 6000), data: seededBytes(5000, 1 + rng.int(2 ** 30)) }));
    segmentKeys.push((await writeSegment(repo, DISK, { generation: 0, sequence: seq, diskSizeBytes: IMAGE_BYTES, extents })).key);
  }
  const points: PointFacts[] = [];
  for (const [m, sha] of [[first.manifest, sha1], [second.manifest, sha2]] as const) {
    points.push({ manifest: m, sha, chunks: chunksOf(await repo.readPointIndex(m)) });
  }
  const { packs, indexPacks } = await packMap(repo);
  return { storage, recoveryKey, points, packs, indexPacks, segmentKeys };
}

const hexId = (id: Buffer): string => id.toString('hex');

function chunksOf(index: { ids: Buffer }): Set<string> {
  const out = new Set<string>();
  for (let o = 0; o < index.ids.length; o += CHUNK_ID_BYTES) {
    const id = index.ids.subarray(o, o + CHUNK_ID_BYTES);
    if (!isZeroId(id)) out.add(hexId(id));
  }
  return out;
}

async function packMap(repo: Repository): Promise<{ packs: Map<string, PackHeader>; indexPacks: Map<string, string[]> }> {
  const packs = new Map<string, PackHeader>();
  const indexPacks = new Map<string, string[]>();
  for await (const info of repo.storage.list('index/')) {
    const headers = decodeIndex(await repo.getSealed(info.key), info.key);
    indexPacks.set(info.key, headers.map((h) => packKey(h.packId.toString('hex'))));
    for (const h of headers) packs.set(packKey(h.packId.toString('hex')), h);
  }
  return { packs, indexPacks };
}

/** Points needing any chunk of the pack's frames that overlap [from, to). */
function pointsNeedingBytes(fx: { points: PointFacts[] }, header: PackHeader, from: number, to: number): Set<number> {
  const frames = new Set<number>();
  header.frames.forEach((f, i) => {
    if (f.offset < to && f.offset + f.length > from) frames.add(i);
  });
  const ids = new Set(header.chunks.filter((c) => frames.has(c.frame)).map((c) => hexId(c.id)));
  const out = new Set<number>();
  fx.points.forEach((p, i) => {
    for (const id of ids) if (p.chunks.has(id)) return void out.add(i);
  });
  return out;
}

function pointsUsingPacks(fx: Fixture, packKeys: readonly string[]): Set<number> {
  const ids = new Set<string>();
  for (const k of packKeys) for (const c of fx.packs.get(k)?.chunks ?? []) ids.add(hexId(c.id));
  const out = new Set<number>();
  fx.points.forEach((p, i) => {
    for (const id of ids) if (p.chunks.has(id)) return void out.add(i);
  });
  return out;
}

function pointOfKey(fx: Fixture, key: string): Set<number> {
  const out = new Set<number>();
  fx.points.forEach((p, i) => {
    if (key === pointIndexKey(p.manifest.disk, p.manifest.pointId) || key === pointManifestKey(p.manifest.disk, p.manifest.pointId)) out.add(i);
  });
  return out;
}

function snapshot(storage: MemoryStorage, keys: readonly string[]): Map<string, string> {
  return new Map(keys.map((k) => [k, createHash('sha256').update(storage.rawObject(k) ?? Buffer.alloc(0)).digest('hex')]));
}

async function allKeys(storage: MemoryStorage): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of storage.list('')) keys.push(info.key);
  return keys;
}

/** JSON objects whose flip leaves the same value (hex case of the MAC, whitespace) are not damaged. */
function sameJsonValue(kind: ObjectKind, a: Buffer, b: Buffer): boolean {
  const norm = (buf: Buffer): string | undefined => {
    try {
      const o = JSON.parse(buf.toString('utf8')) as Record<string, unknown>;
      if (kind === 'config' && typeof o.mac === 'string') o.mac = o.mac.toLowerCase();
      return JSON.stringify(o);
    } catch {
      return undefined;
    }
  };
  const x = norm(a);
  return x !== undefined && x === norm(b);
}

function codeOf(err: unknown): string {
  return isLifeboatError(err) ? err.code : `non-Lifeboat error ${String(err)}`;
}

type RestoreOutcome = { ok: true; sha: string } | { ok: false; code: string; message: string; leftovers: string[] };

/** Restores a point through a freshly opened repository (nothing cached) to a file, like `disk restore`. */
async function restorePoint(storage: MemoryStorage, pointId: string, dir: string, workers = 0): Promise<RestoreOutcome> {
  const target = join(dir, `restore-${pointId}.img`);
  try {
    const repo = await Repository.open(storage, PASS);
    const reader = await PointReader.open(repo, await repo.findPoint(pointId), { workers });
    await writeDisk(reader, target).finally(() => reader.close());
    const sha = sha256File(target);
    rmSync(target);
    return { ok: true, sha };
  } catch (err) {
    const leftovers = readdirSync(dir).filter((n) => n.includes(`restore-${pointId}`));
    for (const n of leftovers) rmSync(join(dir, n), { force: true });
    return { ok: false, code: codeOf(err), message: err instanceof Error ? err.message : String(err), leftovers };
  }
}

class Findings {
  readonly bad: { label: string; what: string }[] = [];
  cases = 0;
  add(label: string, what: string): void {
    this.bad.push({ label, what });
  }
  /** Fails listing each kind of bad outcome once, with how often it happened and one example. */
  assertNone(title: string): void {
    const groups = new Map<string, { n: number; example: string }>();
    for (const b of this.bad) {
      const kind = `${b.label.split(/[/ ]/)[0]}: ${b.what.split('\n')[0]?.replace(/[0-9A-Z]{26}|[0-9a-f]{32}|\b\d+\b/g, '#').slice(0, 160)}`;
      const g = groups.get(kind) ?? { n: 0, example: `${b.label}: ${b.what}` };
      g.n++;
      groups.set(kind, g);
    }
    const lines = [...groups.values()].map((g) => `${g.n} x ${g.example.slice(0, 1200)}`);
    assert.equal(this.bad.length, 0, `${title}: ${this.bad.length} bad outcome(s) in ${this.cases} cases (seed ${SEED}):\n  ${lines.join('\n  ')}`);
  }
}

/**
 * One damaged state of one object: checks open, verify and restore of every
 * point, then puts the object back and checks nothing else moved.
 */
async function checkDamaged(
  fx: Fixture,
  dir: string,
  f: Findings,
  c: { label: string; key: string; expect: ErrorCode; affected: Set<number>; original: Buffer | undefined },
  before: Map<string, string>,
): Promise<void> {
  f.cases++;
  const kind = kindOf(c.key);
  if (kind === 'config' || kind === 'keyslot') {
    // A damaged key slot refuses its own secret; the other slot still opens the store (the point of a
    // recovery key), and verify then reports the damaged slot.
    const damagedSlotKind = kind === 'keyslot' && c.original ? (JSON.parse(c.original.toString('utf8')) as { kind: string }).kind : undefined;
    for (const [how, secret, slotKind] of [['passphrase', PASS, 'passphrase'], ['recovery key', fx.recoveryKey, 'recovery']] as const) {
      const shouldOpen = damagedSlotKind !== undefined && damagedSlotKind !== slotKind;
      try {
        const repo = await Repository.open(fx.storage, secret);
        if (!shouldOpen) f.add(c.label, `opening with the ${how} succeeded on a damaged ${kind}`);
        else {
          const report = await verifyStore(repo);
          if (!report.problems.some((p) => p.object === c.key && p.code === c.expect)) {
            f.add(c.label, `verify did not report the damaged slot ${c.key}: ${JSON.stringify(report.problems)}`);
          }
        }
      } catch (err) {
        if (shouldOpen) f.add(c.label, `opening with the ${how} failed (${codeOf(err)}) although its own slot is intact`);
        else if (codeOf(err) !== c.expect) f.add(c.label, `opening with the ${how} failed with ${codeOf(err)} (${(err as Error).message}), expected ${c.expect}`);
      }
    }
  } else {
    let report: VerifyReport | undefined;
    try {
      report = await verifyStore(await Repository.open(fx.storage, PASS), { full: true });
    } catch (err) {
      f.add(c.label, `verify threw ${codeOf(err)} instead of reporting: ${(err as Error).message}`);
    }
    if (report) {
      const named = report.problems.filter((p) => p.object === c.key || p.message.includes(c.key));
      if (report.ok) f.add(c.label, `verify --full reported ok with ${c.key} ${c.expect === 'MISSING_OBJECT' ? 'deleted' : 'damaged'}`);
      else if (c.expect === 'MISSING_OBJECT' && kind === 'index') {
        // A deleted index object cannot be named; the points whose chunks it listed must be.
        if (!report.problems.some((p) => p.code === 'MISSING_OBJECT')) f.add(c.label, `verify found no MISSING_OBJECT: ${JSON.stringify(report.problems)}`);
      } else if (c.expect === 'MISSING_OBJECT' && kind === 'segment') {
        // A hole in a disk's pending journal: processing refuses it forever, so verify must say so.
        if (!report.problems.some((p) => p.code === 'JOURNAL_GAP')) f.add(c.label, `verify found no JOURNAL_GAP: ${JSON.stringify(report.problems)}`);
      } else if (!named.some((p) => p.code === c.expect)) {
        f.add(c.label, `verify reported no ${c.expect} naming ${c.key}: ${JSON.stringify(report.problems)}`);
      } else if (!named.some((p) => p.object === c.key)) {
        f.add(c.label, `verify names ${c.key} only in the message; the problem's object is ${named.map((p) => p.object).join(', ')}`);
      }
    }
    for (let i = 0; i < fx.points.length; i++) {
      const p = fx.points[i] as PointFacts;
      // Pack damage is met while decoding frames: do that on a worker, as `disk restore` does,
      // so the error's code is seen crossing the thread boundary (a pool costs ~0.3 s to start).
      const r = await restorePoint(fx.storage, p.manifest.pointId, dir, kind === 'pack' ? 1 : 0);
      if (r.ok) {
        if (r.sha !== p.sha) f.add(c.label, `restore of point ${i} SILENTLY RETURNED WRONG BYTES`);
        else if (c.affected.has(i)) f.add(c.label, `restore of point ${i}, which needs the damaged bytes, succeeded`);
      } else {
        if (r.leftovers.length > 0) f.add(c.label, `failed restore of point ${i} left ${r.leftovers.join(', ')}`);
        if (c.affected.has(i) && r.code !== c.expect) {
          f.add(c.label, `restore of point ${i} failed with ${r.code}, expected ${c.expect}: ${r.message}`);
        } else if (!c.affected.has(i) && r.code !== 'CORRUPT_OBJECT' && r.code !== 'MISSING_OBJECT') {
          f.add(c.label, `restore of unaffected point ${i} failed with ${r.code}: ${r.message}`);
        }
      }
    }
    if (kind === 'segment') {
      try {
        const m = await processJournal(await Repository.open(fx.storage, PASS), DISK);
        f.add(c.label, `journal processing of a damaged segment committed point ${m?.pointId ?? '(none)'}`);
      } catch (err) {
        const want = c.expect === 'MISSING_OBJECT' ? 'JOURNAL_GAP' : c.expect;
        if (codeOf(err) !== want) f.add(c.label, `journal processing failed with ${codeOf(err)}, expected ${want}: ${(err as Error).message}`);
      }
    }
  }
  // Put it back: everything must be exactly as before (no failed operation wrote or deleted anything).
  if (c.original) fx.storage.setRawObject(c.key, c.original);
  const after = snapshot(fx.storage, await allKeys(fx.storage));
  if (after.size !== before.size || [...before].some(([k, v]) => after.get(k) !== v)) {
    f.add(c.label, `after repair the store differs: ${[...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k)).join(', ')}`);
    for (const k of after.keys()) if (!before.has(k)) await fx.storage.delete(k);
  }
}

async function verifyClean(storage: MemoryStorage, label: string, f: Findings): Promise<void> {
  const report = await verifyStore(await Repository.open(storage, PASS), { full: true });
  if (!report.ok || report.unreferencedPacks !== 0) f.add(label, `after repair verify is not clean: ${JSON.stringify(report.problems)} unreferenced ${report.unreferencedPacks}`);
}

test('flipped bytes in every object of a memory store are found, named, and never restored as data', async () => {
  const tmp = makeTempDir('fault-flip');
  try {
    const rng = new Rng(SEED);
    const fx = await buildFixture(tmp.path, rng);
    const keys = await allKeys(fx.storage);
    const kinds = new Set(keys.map(kindOf));
    for (const k of ['config', 'keyslot', 'index', 'pack', 'point-index', 'manifest', 'segment'] as const) assert.ok(kinds.has(k), `fixture has no ${k}: ${keys.join(' ')}`);
    const before = snapshot(fx.storage, keys);
    const clean = await verifyStore(await Repository.open(fx.storage, PASS), { full: true });
    assert.ok(clean.ok && clean.unreferencedPacks === 0, `fixture verifies clean: ${JSON.stringify(clean.problems)}`);
    for (const [i, p] of fx.points.entries()) {
      const r = await restorePoint(fx.storage, p.manifest.pointId, tmp.path);
      assert.ok(r.ok && r.sha === p.sha, `point ${i} restores before any damage`);
    }

    const f = new Findings();
    for (const key of keys) {
      const kind = kindOf(key);
      const original = Buffer.from(fx.storage.rawObject(key) as Buffer);
      const len = original.length;
      // Sealed objects: start, middle, end and seeded positions. The small JSON objects (config,
      // key slots) are cheap to open, so every position is tried, with mask 0x01 and a seeded one.
      const json = kind === 'config' || kind === 'keyslot';
      const positions = json ? [...Array(len).keys()] : [0, len >> 1, len - 1, rng.int(len), rng.int(len)];
      const pack = fx.packs.get(key);
      if (pack) {
        const dataEnd = (pack.frames[pack.frames.length - 1] as { offset: number; length: number }).offset + (pack.frames.at(-1)?.length ?? 0);
        positions.push(rng.int(dataEnd), dataEnd + rng.int(len - dataEnd)); // one in the frames, one in header/trailer
      }
      for (const pos of positions) {
        for (const mask of json ? [0x01, rng.mask()] : [rng.mask()]) {
          const bad = flipped(original, pos, mask);
          fx.storage.setRawObject(key, bad);
          const label = `${key} byte ${pos}/${len} ^0x${mask.toString(16)}`;
          if (json && sameJsonValue(kind, original, bad)) {
            f.cases++;
            try {
              await Repository.open(fx.storage, PASS);
            } catch (err) {
              f.add(label, `a flip that keeps the JSON value made opening fail with ${codeOf(err)}`);
            }
            fx.storage.setRawObject(key, original);
            continue;
          }
          let affected = new Set<number>();
          if (pack) affected = pointsNeedingBytes(fx, pack, pos, pos + 1);
          else if (kind === 'index') affected = pointsUsingPacks(fx, fx.indexPacks.get(key) ?? []);
          else if (kind === 'point-index' || kind === 'manifest') affected = pointOfKey(fx, key);
          await checkDamaged(fx, tmp.path, f, { label, key, expect: 'CORRUPT_OBJECT', affected, original }, before);
        }
      }
      if (!json) await verifyClean(fx.storage, `${key} after flips`, f);
    }
    f.assertNone('flipped bytes');
  } finally {
    tmp.cleanup();
  }
});

test('truncated objects are CORRUPT_OBJECT and deleted ones MISSING_OBJECT (memory store)', async () => {
  const tmp = makeTempDir('fault-cut');
  try {
    const rng = new Rng(SEED + 1);
    const fx = await buildFixture(tmp.path, rng);
    const keys = await allKeys(fx.storage);
    const before = snapshot(fx.storage, keys);
    const f = new Findings();

    for (const key of keys) {
      const kind = kindOf(key);
      const original = Buffer.from(fx.storage.rawObject(key) as Buffer);
      const len = original.length;
      const lengths = [...new Set([0, 1, len >> 1, len - 1, rng.int(len)])];
      const pack = fx.packs.get(key);
      for (const cut of lengths) {
        const bad = Buffer.from(original.subarray(0, cut));
        fx.storage.setRawObject(key, bad);
        if ((kind === 'config' || kind === 'keyslot') && sameJsonValue(kind, original, bad)) {
          // Only trailing whitespace went: the same object, which must still open.
          f.cases++;
          await Repository.open(fx.storage, PASS).catch((err: unknown) => f.add(`${key} cut to ${cut}`, `opening failed with ${codeOf(err)}`));
          fx.storage.setRawObject(key, original);
          continue;
        }
        let affected = new Set<number>();
        if (pack) affected = pointsNeedingBytes(fx, pack, cut, len);
        else if (kind === 'index') affected = pointsUsingPacks(fx, fx.indexPacks.get(key) ?? []);
        else if (kind === 'point-index' || kind === 'manifest') affected = pointOfKey(fx, key);
        await checkDamaged(fx, tmp.path, f, { label: `${key} cut to ${cut}/${len}`, key, expect: 'CORRUPT_OBJECT', affected, original }, before);
      }
    }

    // Deleted objects. A deleted manifest is a deleted point (gc removes its index), and a
    // deleted newest segment is indistinguishable from one not yet shipped, so neither is damage.
    const deletable = keys.filter((k) => ['pack', 'index', 'point-index'].includes(kindOf(k)));
    deletable.push(fx.segmentKeys[1] as string);
    for (const key of deletable) {
      const kind = kindOf(key);
      const original = Buffer.from(fx.storage.rawObject(key) as Buffer);
      await fx.storage.delete(key);
      let affected = new Set<number>();
      if (kind === 'pack') affected = pointsUsingPacks(fx, [key]);
      else if (kind === 'index') affected = pointsUsingPacks(fx, fx.indexPacks.get(key) ?? []);
      else if (kind === 'point-index') affected = pointOfKey(fx, key);
      assert.ok(affected.size > 0 || kind === 'segment', `${key} is needed by some point`);
      await checkDamaged(fx, tmp.path, f, { label: `${key} deleted`, key, expect: 'MISSING_OBJECT', affected, original: undefined }, new Map([...before].filter(([k]) => k !== key)));
      await fx.storage.put(key, original);
    }
    await verifyClean(fx.storage, 'after every truncation and deletion', f);
    f.assertNone('truncated and missing objects');
  } finally {
    tmp.cleanup();
  }
});

test('flipped bytes in a file:// store: `store verify --full` and `disk restore` exit 6 through the CLI', async () => {
  requireBuild();
  const tmp = makeTempDir('fault-flip-cli');
  try {
    const rng = new Rng(SEED + 2);
    const storeDir = join(tmp.path, 'store');
    const url = `file://${storeDir}`;
    const pass = 'flip test passphrase';
    const env = cliEnv({ LIFEBOAT_STORE: url, LIFEBOAT_PASSPHRASE: pass });
    const ok = async (args: string[]): Promise<CliResult> => {
      const r = await runCli(args, env);
      assert.equal(r.code, 0, `lifeboat ${args.join(' ')}\n${describeRun(r)}`);
      return r;
    };
    await ok(['store', 'init', '--json']);
    const img = join(tmp.path, 'disk.img');
    writeMixedImage(img, IMAGE_BYTES, 11);
    const p1 = (await ok(['disk', 'backup', img, '--disk', DISK, '--json', '-q'])).json as { pointId: string };
    const sha1 = sha256File(img);
    seededScribble(img, IMAGE_BYTES, 24, rng);
    const p2 = (await ok(['disk', 'backup', img, '--disk', DISK, '--json', '-q'])).json as { pointId: string };
    const sha2 = sha256File(img);

    // Segments with the library, and the facts that say which point needs which bytes.
    const storage = await openStorage(url);
    const fx: { points: PointFacts[] } = { points: [] };
    let packs: Map<string, PackHeader>;
    let indexPacks: Map<string, string[]>;
    try {
      const repo = await Repository.open(storage, pass);
      for (let seq = 1; seq <= 3; seq++) {
        await writeSegment(repo, DISK, { generation: 0, sequence: seq, diskSizeBytes: IMAGE_BYTES, extents: [{ offset: rng.int(IMAGE_BYTES - 4096), data: seededBytes(4096, seq) }] });
      }
      for (const [id, sha] of [[p1.pointId, sha1], [p2.pointId, sha2]] as const) {
        const m = await repo.findPoint(id);
        fx.points.push({ manifest: m, sha, chunks: chunksOf(await repo.readPointIndex(m)) });
      }
      ({ packs, indexPacks } = await packMap(repo));
    } finally {
      await storage.close();
    }
    const verifyFull = ['store', 'verify', '--full', '--json', '-q'];
    await ok(verifyFull);

    const keys = storeKeys(storeDir);
    const f = new Findings();
    for (const key of keys) {
      const kind = kindOf(key);
      if (kind === 'lock' || kind === 'other') continue;
      const path = join(storeDir, ...key.split('/'));
      const original = readFileSync(path);
      const pack = packs.get(key);
      // In a pack, flip inside the frames so a restore must meet the damage; elsewhere anywhere.
      const span = pack ? (pack.frames.at(-1)?.offset ?? 0) + (pack.frames.at(-1)?.length ?? 0) : original.length;
      const pos = rng.int(span);
      let mask = rng.mask();
      while ((kind === 'config' || kind === 'keyslot') && sameJsonValue(kind, original, flipped(original, pos, mask))) mask = rng.mask();
      writeFileSync(path, flipped(original, pos, mask));
      const label = `${key} byte ${pos}/${original.length} ^0x${mask.toString(16)}`;
      f.cases++;

      // The CLI opens with the passphrase: a damaged recovery slot leaves the store open and verify names the slot.
      const opensAnyway = kind === 'keyslot' && (JSON.parse(original.toString('utf8')) as { kind: string }).kind === 'recovery';
      const v = await runCli(verifyFull, env);
      if (v.code !== 6) f.add(label, `store verify --full: expected exit 6\n${describeRun(v)}`);
      if (!v.stderr.includes('CORRUPT_OBJECT') && !v.stdout.includes('CORRUPT_OBJECT')) f.add(label, 'verify output does not carry CORRUPT_OBJECT');
      if ((opensAnyway || (kind !== 'config' && kind !== 'keyslot')) && !v.stdout.includes(key)) f.add(label, `verify output does not name ${key}`);
      if (v.code === 6 && v.json === undefined) f.add(label, `verify --json stdout is not one JSON document:\n${v.stdout.slice(0, 1500)}`);
      if ((kind === 'config' || kind === 'keyslot') && !opensAnyway) {
        const e = jsonError(v);
        if (e?.code !== 'CORRUPT_OBJECT') f.add(label, `opening a store with a damaged ${kind} gave ${e?.code ?? 'no JSON error'}\n${describeRun(v)}`);
      }

      let affected = new Set<number>();
      if (pack) affected = pointsNeedingBytes(fx, pack, pos, pos + 1);
      else if (kind === 'index') affected = new Set(fx.points.keys()); // the chunk index loads every index object
      else if (kind === 'point-index' || kind === 'manifest' || kind === 'config' || kind === 'keyslot') {
        affected = kind === 'config' || kind === 'keyslot' ? new Set(fx.points.keys()) : pointOfKey(fx as Fixture, key);
      }
      if (opensAnyway) affected = new Set();
      for (const i of affected) {
        const p = fx.points[i] as PointFacts;
        const target = join(tmp.path, `restored-${i}.img`);
        const r = await runCli(['disk', 'restore', p.manifest.pointId, '--to', target, '--json', '-q'], env);
        if (r.code !== 6 || jsonError(r)?.code !== 'CORRUPT_OBJECT') f.add(label, `disk restore of point ${i}: expected exit 6 CORRUPT_OBJECT\n${describeRun(r)}`);
        if (existsSync(target)) {
          f.add(label, `failed restore of point ${i} created ${target}${sha256File(target) === p.sha ? '' : ' WITH WRONG BYTES'}`);
          unlinkSync(target);
        }
        const leftovers = readdirSync(tmp.path).filter((n) => n.includes('lifeboat-tmp'));
        if (leftovers.length > 0) f.add(label, `failed restore left ${leftovers.join(', ')}`);
      }
      writeFileSync(path, original);
    }
    // Truncation and deletion of a pack through the CLI.
    const somePack = keys.find((k) => kindOf(k) === 'pack') as string;
    const packPath = join(storeDir, ...somePack.split('/'));
    const packBytes = readFileSync(packPath);
    truncateSync(packPath, packBytes.length >> 1);
    const cut = await runCli(verifyFull, env);
    if (cut.code !== 6 || !cut.stdout.includes(somePack)) f.add(`${somePack} truncated`, `verify: expected exit 6 naming the pack\n${describeRun(cut)}`);
    unlinkSync(packPath);
    const gone = await runCli(['store', 'verify', '--json', '-q'], env);
    if (gone.code !== 6 || !gone.stdout.includes('MISSING_OBJECT') || !gone.stdout.includes(somePack)) f.add(`${somePack} deleted`, `verify: expected exit 6 MISSING_OBJECT naming the pack\n${describeRun(gone)}`);
    const needs = [...pointsUsingPacks({ points: fx.points, packs, indexPacks } as unknown as Fixture, [somePack])];
    for (const i of needs) {
      const target = join(tmp.path, `restored-${i}.img`);
      const r = await runCli(['disk', 'restore', (fx.points[i] as PointFacts).manifest.pointId, '--to', target, '--json', '-q'], env);
      if (r.code !== 6 || jsonError(r)?.code !== 'MISSING_OBJECT' || existsSync(target)) f.add(`${somePack} deleted`, `restore of point ${i}: expected exit 6 MISSING_OBJECT, no target\n${describeRun(r)}`);
    }
    writeFileSync(packPath, packBytes);

    const final = await runCli(verifyFull, env);
    if (final.code !== 0) f.add('after repairs', `verify --full is not clean\n${describeRun(final)}`);
    for (const [i, p] of fx.points.entries()) {
      const target = join(tmp.path, `final-${i}.img`);
      const r = await runCli(['disk', 'restore', p.manifest.pointId, '--to', target, '--json', '-q'], env);
      if (r.code !== 0 || sha256File(target) !== p.sha) f.add('after repairs', `point ${i} does not restore bit for bit\n${describeRun(r)}`);
    }
    f.assertNone('CLI flipped bytes');
  } finally {
    tmp.cleanup();
  }
});
