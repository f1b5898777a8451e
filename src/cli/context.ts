import { readFileSync } from 'node:fs';
import { LifeboatError } from '../core/errors.js';
import { openStorage } from '../storage/registry.js';
import type { Storage } from '../storage/storage.js';
import { Repository } from '../store/repository.js';
import { Progress as ProgressLine } from './progress.js';

/** Options every store command accepts. */
export interface StoreFlags {
  store?: string;
  passphraseFile?: string;
  json?: boolean;
  quiet?: boolean;
}

export interface Env {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export function storeUrl(flags: StoreFlags, env: Env): string {
  const url = flags.store ?? env.env.LIFEBOAT_STORE;
  if (!url) throw new LifeboatError('USAGE', 'no store given: pass --store URL or set LIFEBOAT_STORE');
  return url;
}

/** The passphrase (or recovery key): --passphrase-file first, then LIFEBOAT_PASSPHRASE. */
export function secret(flags: StoreFlags, env: Env): string {
  if (flags.passphraseFile) {
    let text: string;
    try {
      text = readFileSync(flags.passphraseFile, 'utf8');
    } catch (err) {
      throw new LifeboatError('PASSPHRASE_REQUIRED', `cannot read passphrase file ${flags.passphraseFile}`, { cause: err });
    }
    const line = text.split(/\r?\n/)[0] ?? '';
    if (line.length === 0) throw new LifeboatError('PASSPHRASE_REQUIRED', `passphrase file ${flags.passphraseFile} is empty`);
    return line;
  }
  const fromEnv = env.env.LIFEBOAT_PASSPHRASE;
  if (fromEnv) return fromEnv;
  throw new LifeboatError('PASSPHRASE_REQUIRED', 'no passphrase: set LIFEBOAT_PASSPHRASE or pass --passphrase-file FILE');
}

export async function withStorage<T>(flags: StoreFlags, env: Env, fn: (storage: Storage) => Promise<T>): Promise<T> {
  const storage = await openStorage(storeUrl(flags, env), { env: env.env });
  try {
    return await fn(storage);
  } finally {
    await storage.close();
  }
}

export async function withRepo<T>(flags: StoreFlags, env: Env, fn: (repo: Repository) => Promise<T>): Promise<T> {
  const pass = secret(flags, env);
  return withStorage(flags, env, async (storage) => fn(await Repository.open(storage, pass)));
}

export function progressFor(flags: StoreFlags, env: Env, label: string): ProgressLine {
  return new ProgressLine(env.stderr, label, !flags.quiet);
}

export function emit(flags: StoreFlags, env: Env, json: unknown, human: string): void {
  env.stdout.write(flags.json ? JSON.stringify(json, null, 2) + '\n' : human.endsWith('\n') || human === '' ? human : human + '\n');
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Parses "90s", "15m", "24h", "7d", "2w" into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhdw])$/.exec(text.trim());
  if (!m) throw new LifeboatError('USAGE', `duration ${JSON.stringify(text)} must look like 90s, 15m, 24h, 7d or 2w`);
  return Number(m[1]) * (UNITS[m[2] as string] as number);
}

export function parseCount(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new LifeboatError('USAGE', `${what} must be a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** Parses sizes like 4096, 64K, 4KiB, 1M. */
export function parseBytes(text: string): number {
  const m = /^(\d+)\s*(|k|kib|m|mib|g|gib)$/i.exec(text.trim());
  if (!m) throw new LifeboatError('USAGE', `size ${JSON.stringify(text)} must look like 4096, 64K or 1M`);
  const unit = (m[2] as string).toLowerCase()[0];
  return Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 2 ** 20 : unit === 'g' ? 2 ** 30 : 1);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
