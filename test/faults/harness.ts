/**
 * Shared pieces of the fault tests: the real CLI as a child process, a seeded
 * random source (every fault position is reproducible from the seed printed by
 * the test), byte flipping, and restoring points to compare with sha256.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { BlockSource } from '../../src/core/block-source.js';
import { repoRoot } from '../helpers/env.js';
import { seededBytes } from '../helpers/images.js';

export const MiB = 2 ** 20;
export const BIN = join(repoRoot, 'bin', 'lifeboat.js');

/** The CLI runs from dist/: a missing build fails the test with what to do, never skips it. */
export function requireBuild(): void {
  if (!existsSync(join(repoRoot, 'dist', 'cli', 'main.js'))) {
    throw new Error('dist/cli/main.js is missing: run `npm run build` first (npm test builds before testing)');
  }
}

/** A clean environment for the CLI: nothing inherited that could name a store or a passphrase. */
export function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: process.env.TMPDIR };
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  /** stdout parsed as JSON when it is JSON. */
  readonly json: unknown;
}

export function spawnCli(args: readonly string[], env: NodeJS.ProcessEnv): ChildProcess {
  requireBuild();
  return spawn(process.execPath, [BIN, ...args], { env, cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs the CLI to completion (or until `timeoutMs`, then SIGKILL and a thrown error). */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<CliResult> {
  const started = Date.now();
  const child = spawnCli(args, env);
  return collect(child, started, timeoutMs, args);
}

export function collect(child: ChildProcess, started: number, timeoutMs: number, args: readonly string[]): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`lifeboat ${args.join(' ')} did not finish within ${timeoutMs} ms\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, json });
    });
  });
}

/** For assertion messages: what a CLI run said. */
export function describeRun(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout.slice(0, 3000)}\n--- stderr\n${r.stderr.slice(0, 3000)}`;
}

/** The `error` object the CLI prints with --json when a command fails. */
export function jsonError(r: CliResult): { code?: string; message?: string; details?: Record<string, unknown> } | undefined {
  const j = r.json as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined;
  return j?.error;
}

/** mulberry32: small, fast and seeded, so a failing position can be replayed. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** A non-zero XOR mask: flipping with it always changes the byte. */
  mask(): number {
    return 1 + this.int(255);
  }
}

/** The seed comes from LIFEBOAT_FAULT_SEED when set, so a failure can be replayed exactly. */
export function faultSeed(fallback: number): number {
  const s = process.env.LIFEBOAT_FAULT_SEED;
  return s && /^\d+$/.test(s) ? Number(s) : fallback;
}

export function flipped(buf: Buffer, pos: number, mask: number): Buffer {
  const out = Buffer.from(buf);
  out[pos] = (out[pos] as number) ^ mask;
  return out;
}

/** Overwrites `count` 4 KiB blocks at seeded places with seeded data (a seeded `scribble`). */
export function seededScribble(path: string, sizeBytes: number, count: number, rng: Rng): number[] {
  const fd = openSync(path, 'r+');
  const offsets: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const off = rng.int(Math.floor(sizeBytes / 4096)) * 4096;
      writeSync(fd, seededBytes(4096, 1 + rng.int(2 ** 31)), 0, 4096, off);
      offsets.push(off);
    }
  } finally {
    closeSync(fd);
  }
  return offsets;
}

/** Overwrites [offset, offset+length) with seeded data. */
export function overwrite(path: string, offset: number, length: number, seed: number): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, seededBytes(length, seed), 0, length, offset);
  } finally {
    closeSync(fd);
  }
}

/** sha256 of everything a BlockSource reads, the same digest sha256File gives for the image. */
export async function sha256Source(source: BlockSource, windowBytes = 4 * MiB): Promise<string> {
  const h = createHash('sha256');
  for (let o = 0; o < source.sizeBytes; o += windowBytes) h.update(await source.read(o, Math.min(windowBytes, source.sizeBytes - o)));
  return h.digest('hex');
}

/** Keys of a file:// store, read from its folder (temp files of interrupted puts have '~' and are left out). */
export function storeKeys(root: string, prefix = ''): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const e of readdirSync(root, { withFileTypes: true })) {
    if (e.name.includes('~')) continue;
    if (e.isDirectory()) out.push(...storeKeys(join(root, e.name), `${prefix}${e.name}/`));
    else if (e.isFile()) out.push(prefix + e.name);
  }
  return out.sort();
}

/** Temp files left in a file:// store by puts that never finished. */
export function tempFiles(root: string): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const e of readdirSync(root, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...tempFiles(join(root, e.name)));
    else if (e.name.includes('~')) out.push(join(root, e.name));
  }
  return out;
}

export type ObjectKind = 'config' | 'keyslot' | 'index' | 'pack' | 'point-index' | 'manifest' | 'segment' | 'lock' | 'other';

export function kindOf(key: string): ObjectKind {
  if (key === 'config') return 'config';
  if (key.startsWith('keys/')) return 'keyslot';
  if (key.startsWith('index/')) return 'index';
  if (key.startsWith('data/')) return 'pack';
  if (/^points\/.+\.index$/.test(key)) return 'point-index';
  if (/^points\/.+\.manifest$/.test(key)) return 'manifest';
  if (key.startsWith('journal/')) return 'segment';
  if (key.startsWith('locks/')) return 'lock';
  return 'other';
}
