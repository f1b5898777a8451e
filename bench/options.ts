import { parseArgs } from 'node:util';

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
}

export const TOOL_NAMES = ['zstd', 'restic', 'borg', 'lifeboat'] as const;
export type ToolName = (typeof TOOL_NAMES)[number];

export const USAGE = `usage: npm run bench -- [--size 2G] [--seed 1] [--out FILE] [--tools zstd,restic,borg,lifeboat]

  --size   logical size of the generated ext4 image (K/M/G suffixes are binary; minimum 128M)
  --seed   seed for image content and the 1% mutation (default 1)
  --out    also write the markdown report to FILE
  --tools  comma-separated subset of: ${TOOL_NAMES.join(', ')}`;

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
  return Object.freeze({ imageSizeBytes, seed, outPath: values.out, tools: tools as ToolName[] });
}
