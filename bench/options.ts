import { parseArgs } from 'node:util';
import { CONTROL_PLANE_DEFAULTS } from './control-plane.js';
import type { ControlPlaneOptions } from './control-plane.js';
import { RECOVERY_DEFAULTS, type RecoveryOptions } from './recovery.js';

/** Resolved command line of `npm run bench`, validated once. */
export interface BenchOptions {
  /** Logical size of the generated disk image. */
  readonly imageSizeBytes: number;
  /** Seed for the image content and the mutation; same seed, same bytes. */
  readonly seed: number;
  /** Markdown report is also written here when set. */
  readonly outPath: string | undefined;
  /** Tools to run, in order (zstd is the speed reference). */
  readonly tools: readonly ToolName[];
  /**
   * Chunk sizes for the lifeboat chunk-size sweep, in bytes, in the order given; empty
   * (the default) skips the sweep. Independent of --tools: the sweep runs lifeboat only.
   */
  readonly chunkSizesBytes: readonly number[];
  /** --control-plane: run only the control-plane load (bench/control-plane.ts), not the disk suite. */
  readonly controlPlaneOnly: boolean;
  /** --skip-control-plane: the full run without the control-plane load (about 1.5 min). */
  readonly skipControlPlane: boolean;
  /** Shape of the control-plane load (--cp-agents, --cp-readers, --cp-seconds). */
  readonly controlPlane: ControlPlaneOptions;
}

export const TOOL_NAMES = ['zstd', 'restic', 'borg', 'lifeboat'] as const;
export type ToolName = (typeof TOOL_NAMES)[number];

/** Bounds of `lifeboat store init --chunk-size` (src/format/store-config.ts). */
const MIN_CHUNK_BYTES = 4 * 1024;
const MAX_CHUNK_BYTES = 4 * 1024 ** 2;

export const USAGE = `usage: npm run bench -- [--size 2G] [--seed 1] [--out FILE] [--tools zstd,restic,borg,lifeboat] [--chunk-sizes 4K,16K,64K,256K] [--skip-control-plane]
       npm run bench -- --control-plane [--cp-agents 2000] [--cp-readers 50] [--cp-seconds 60]
       npm run bench -- --recovery [--recovery-sizes 1,8,32] [--recovery-failback-size 8]

  --size         logical size of the generated ext4 image (K/M/G suffixes are binary; minimum 128M)
  --seed         seed for image content and the 1% mutations (default 1)
  --out          also write the markdown report to FILE
  --tools        comma-separated subset of: ${TOOL_NAMES.join(', ')}
  --chunk-sizes  also run the lifeboat chunk-size sweep at these store chunk sizes
                 (powers of two from 4K to 4M); off unless given
  --control-plane  run only the control-plane load against a real \`lifeboat server\`
                 (the full run ends with it unless --skip-control-plane)
  --cp-agents    configuration servers heartbeating every 30 s (default 2000)
  --cp-readers   concurrent API readers (default 50)
  --cp-seconds   measured window after a 10 s warm-up (default 60)`;

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** "256M", "2G", "2GiB", "1048576" -> bytes (binary units). */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  const unit = m ? UNITS[m[2]!.toUpperCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`invalid size "${text}" (examples: 256M, 2G)`);
  return Number(m[1]) * unit;
}

export function parseOptions(argv: readonly string[]): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      size: { type: 'string', default: '2G' },
      seed: { type: 'string', default: '1' },
      out: { type: 'string' },
      tools: { type: 'string', default: TOOL_NAMES.join(',') },
      'chunk-sizes': { type: 'string', default: '' },
      'control-plane': { type: 'boolean', default: false },
      'skip-control-plane': { type: 'boolean', default: false },
      'cp-agents': { type: 'string', default: String(CONTROL_PLANE_DEFAULTS.agents) },
      'cp-readers': { type: 'string', default: String(CONTROL_PLANE_DEFAULTS.readers) },
      'cp-seconds': { type: 'string', default: String(CONTROL_PLANE_DEFAULTS.durationS) },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const imageSizeBytes = parseSize(values.size);
  if (imageSizeBytes < 128 * 1024 ** 2 || imageSizeBytes % 4096 !== 0) {
    throw new Error(`--size must be at least 128M and a multiple of 4 KiB, got ${values.size}`);
  }
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`--seed must be a non-negative integer, got ${values.seed}`);
  const tools = values.tools.split(',').map((t) => t.trim()).filter((t) => t !== '');
  for (const t of tools) {
    if (!(TOOL_NAMES as readonly string[]).includes(t)) throw new Error(`unknown tool "${t}" in --tools (known: ${TOOL_NAMES.join(', ')})`);
  }
  const chunkSizesBytes = parseChunkSizes(values['chunk-sizes']);
  if (values['control-plane'] && values['skip-control-plane']) throw new Error('--control-plane and --skip-control-plane contradict each other');
  const controlPlane = Object.freeze({
    agents: boundedInt(values['cp-agents'], '--cp-agents', 1, 100_000),
    readers: boundedInt(values['cp-readers'], '--cp-readers', 0, 1_000),
    durationS: boundedInt(values['cp-seconds'], '--cp-seconds', 1, 3_600),
    warmupS: CONTROL_PLANE_DEFAULTS.warmupS,
  });
  return Object.freeze({ imageSizeBytes, seed, outPath: values.out, tools: tools as ToolName[], chunkSizesBytes, controlPlaneOnly: values['control-plane'], skipControlPlane: values['skip-control-plane'], controlPlane });
}

function boundedInt(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new Error(`${flag} must be a whole number from ${min} to ${max}, got ${text}`);
  return n;
}

/** "4K,16K,64K" -> [4096, 16384, 65536]; each a power of two the store accepts, no repeats. */
function parseChunkSizes(text: string): number[] {
  const sizes = text.split(',').map((t) => t.trim()).filter((t) => t !== '').map(parseSize);
  for (const s of sizes) {
    if (s < MIN_CHUNK_BYTES || s > MAX_CHUNK_BYTES || (s & (s - 1)) !== 0) {
      throw new Error(`--chunk-sizes: ${sizeLabel(s)} is not a power of two from 4K to 4M`);
    }
  }
  if (new Set(sizes).size !== sizes.length) throw new Error(`--chunk-sizes lists a size twice: ${text}`);
  return sizes;
}

/** 4096 -> "4K", 1048576 -> "1M": how chunk sizes are written on the command line and in the report. */
export function sizeLabel(n: number): string {
  for (const [suffix, unit] of [['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (n >= unit && n % unit === 0) return `${n / unit}${suffix}`;
  }
  return String(n);
}

export const RECOVERY_USAGE = `usage: npm run -s bench -- --recovery [--recovery-sizes 1,8,32] [--recovery-drills 1] [--recovery-failback-size 8] [--out FILE]

  --recovery-sizes          disk sizes (GiB, whole numbers) of the test-failover → boot marker runs
  --recovery-drills         test failovers per size (the report shows the median and the range)
  --recovery-failback-size  disk size (GiB) of the failback run after a 1 % change; 0 skips it
  (see docs/benchmarks.md, "Recovery")`;

/** --recovery and its sub-options (bench/recovery.ts), validated once. */
export function parseRecoveryOptions(argv: readonly string[]): { readonly recovery: RecoveryOptions; readonly outPath: string | undefined } {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      recovery: { type: 'boolean', default: false },
      'recovery-sizes': { type: 'string', default: RECOVERY_DEFAULTS.sizesGiB.join(',') },
      'recovery-failback-size': { type: 'string', default: String(RECOVERY_DEFAULTS.failbackGiB) },
      'recovery-drills': { type: 'string', default: String(RECOVERY_DEFAULTS.drillsPerSize) },
      out: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const sizesGiB = values['recovery-sizes'].split(',').map((t) => boundedInt(t.trim(), '--recovery-sizes', 1, 1024));
  if (sizesGiB.length === 0 || new Set(sizesGiB).size !== sizesGiB.length) throw new Error(`--recovery-sizes must list distinct sizes, got ${values['recovery-sizes']}`);
  const failbackGiB = boundedInt(values['recovery-failback-size'], '--recovery-failback-size', 0, 1024);
  const drillsPerSize = boundedInt(values['recovery-drills'], '--recovery-drills', 1, 100);
  return Object.freeze({ recovery: Object.freeze({ ...RECOVERY_DEFAULTS, sizesGiB, failbackGiB, drillsPerSize }), outPath: values.out });
}
