import { resolve, join } from 'node:path';

/** Repository root (bench/ lives directly under it). */
export const ROOT = resolve(import.meta.dirname, '..');

/** Everything the benchmark writes lives here; .gitignore and eslint ignore it. */
export const BENCH_DIR = join(ROOT, '.bench');
