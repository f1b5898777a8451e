import type { ImageInfo } from './image.js';
import type { MachineFacts } from './machine.js';
import type { MutationInfo } from './mutate.js';
import { sizeLabel } from './options.js';

export interface StepFigures {
  readonly wallS: number;
  readonly peakRssKiB: number;
}

/** What one backup tool achieved; a step is missing when it or an earlier step failed. */
export interface ToolResult {
  readonly tool: string;
  readonly version: string;
  readonly commands: readonly string[];
  /** "<step>: <message>" of the first failure. */
  error?: string;
  first?: StepFigures & { readonly repoBytes: number };
  second?: StepFigures & { readonly repoBytes: number; readonly addedBytes: number };
  restore?: StepFigures & { readonly verified: boolean };
  finalRepoBytes?: number;
  readonly reported: { first?: Readonly<Record<string, unknown>>; second?: Readonly<Record<string, unknown>> };
}

export interface BenchResults {
  readonly commandLine: string;
  readonly startedAt: string;
  readonly totalWallS: number;
  readonly machine: MachineFacts;
  readonly image: ImageInfo;
  readonly mutation: MutationInfo;
  readonly zstd: { figures?: StepFigures; error?: string; readonly command: string };
  readonly tools: readonly ToolResult[];
  /** Present when --chunk-sizes was given. */
  readonly chunkSweep?: ChunkSweep;
}

/** lifeboat at several store chunk sizes: one lineage per change pattern (bench/chunk-sweep.ts). */
export interface ChunkSweep {
  /** The scattered change is BenchResults.mutation; this is the clustered one. */
  readonly clusteredMutation: MutationInfo;
  readonly rows: readonly ChunkSweepRow[];
}

export interface ChunkSweepRow {
  readonly chunkSizeBytes: number;
  /** init, first backup, second backup after the scattered change, restore + sha256. */
  readonly scattered: ToolResult;
  /** init, first backup, second backup after the clustered change (no restore). */
  readonly clustered: ToolResult;
}

/** Goals the tool is held to (docs/benchmarks.md). */
export const GOALS = {
  firstBackupVsZstd: 1.5,
  secondBytesVsCompressedChange: 1.5,
  secondTimeVsRestic: 0.25,
  restoreSpeedupVsRestic: 3,
} as const;

const bytes = (n: number) => n.toLocaleString('en-US');
const mib = (kib: number) => (kib / 1024).toFixed(0);
const secs = (s: number) => s.toFixed(2);
const ratio = (r: number) => `${r.toFixed(2)}×`;
const mbps = (sizeBytes: number, s: number) => (s > 0 ? (sizeBytes / 1e6 / s).toFixed(0) : '∞');
const gib = (n: number) => `${(n / 1024 ** 3).toFixed(2)} GiB`;
const NA = '–';
const FAILED = 'failed';

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** The whole report as markdown: absolute numbers, ratios, goals, failures and how it was run. */
export function renderMarkdown(r: BenchResults): string {
  const size = r.image.sizeBytes;
  const byName = new Map(r.tools.map((t) => [t.tool, t]));
  const restic = byName.get('restic');
  const borg = byName.get('borg');
  const lifeboat = byName.get('lifeboat');
  const zstdWall = r.zstd.figures?.wallS;
  const out: string[] = [];

  out.push(`# Lifeboat benchmark, ${gib(size)} image`, '');
  out.push(`- Command: \`${r.commandLine}\``);
  out.push(`- Started: ${r.startedAt}; whole run took ${r.totalWallS.toFixed(0)} s`);
  out.push(
    `- Machine: ${r.machine.cpu}, nproc ${r.machine.nproc}, ${r.machine.memory} RAM, ${r.machine.os}, ${r.machine.kernel}, ` +
      `node ${r.machine.node}, .bench on ${r.machine.filesystem}, load average ${r.machine.loadAverage}`,
  );
  out.push(`- Versions: ${Object.entries(r.machine.tools).map(([k, v]) => `${k}: \`${v}\``).join('; ')}`);
  out.push(
    `- Image: ext4 (mkfs.ext4 -d, never mounted), ${bytes(size)} B logical, ${bytes(r.image.allocatedBytes)} B allocated; ` +
      `${r.image.randomFiles} random + ${r.image.logFiles} log-text files of 30 MiB; seed ${r.image.seed}; sha256 ${r.image.sha256.slice(0, 16)}…`,
  );
  out.push(
    `- Change between backups: ${bytes(r.mutation.blocks)} random 4 KiB blocks at random aligned offsets (1% of the image) = ` +
      `${bytes(r.mutation.changedBytes)} B; compressed size of the change (zstd -1 of the new blocks) = ${bytes(r.mutation.compressedChangeBytes)} B`,
  );
  if (r.machine.loadAtStart > r.machine.nproc / 2) {
    out.push(
      `- **Warning:** load average ${r.machine.loadAtStart.toFixed(1)} at start on ${r.machine.nproc} cores: other processes competed for the CPU, ` +
        'so wall times are inflated and ratios between tools are less reliable.',
    );
  }
  out.push('- Wall time and peak RSS from `/usr/bin/time -f "%e %M"`; page cache warm; MB = 10^6 bytes; every tool on a fresh repository.', '');

  out.push('## First backup (full image)', '');
  const firstRows: string[][] = [];
  firstRows.push(
    r.zstd.figures
      ? ['`zstd -1 -T2` (reference)', secs(r.zstd.figures.wallS), mbps(size, r.zstd.figures.wallS), mib(r.zstd.figures.peakRssKiB), ratio(1), NA]
      : ['`zstd -1 -T2` (reference)', r.zstd.error ? FAILED : 'not run', NA, NA, NA, NA],
  );
  for (const t of r.tools) {
    const f = t.first;
    firstRows.push(
      f
        ? [t.tool, secs(f.wallS), mbps(size, f.wallS), mib(f.peakRssKiB), zstdWall ? ratio(f.wallS / zstdWall) : NA, bytes(f.repoBytes)]
        : [t.tool, FAILED, NA, NA, NA, NA],
    );
  }
  out.push(table(['Tool', 'Wall s', 'MB/s', 'Peak RSS MiB', '× zstd wall', 'Repo bytes after'], firstRows), '');

  out.push('## Second backup (same path, after the 1% change)', '');
  const change = r.mutation.compressedChangeBytes;
  const secondRows = r.tools.map((t) => {
    const s = t.second;
    if (!s) return [t.tool, FAILED, NA, NA, NA, NA];
    const vsRestic = restic?.second ? ratio(s.wallS / restic.second.wallS) : NA;
    return [t.tool, secs(s.wallS), mib(s.peakRssKiB), bytes(s.addedBytes), ratio(s.addedBytes / change), vsRestic];
  });
  out.push(table(['Tool', 'Wall s', 'Peak RSS MiB', 'Bytes added to repo', '× compressed change', '× restic wall'], secondRows), '');

  out.push('## Restore (second backup, verified with sha256)', '');
  const restoreRows = r.tools.map((t) => {
    const x = t.restore;
    if (!x) return [t.tool, FAILED, NA, NA, NA, NA];
    const speedup = restic?.restore ? ratio(restic.restore.wallS / x.wallS) : NA;
    return [t.tool, secs(x.wallS), mbps(size, x.wallS), mib(x.peakRssKiB), speedup, x.verified ? 'OK' : 'MISMATCH'];
  });
  out.push(table(['Tool', 'Wall s', 'MB/s', 'Peak RSS MiB', 'restic ÷ tool', 'sha256'], restoreRows), '');

  out.push('## Store size after both backups', '');
  const sizeRows = r.tools.map((t) => {
    const b = t.finalRepoBytes;
    if (b === undefined) return [t.tool, FAILED, NA, NA, NA];
    const vs = (o: ToolResult | undefined) => (o?.finalRepoBytes ? ratio(b / o.finalRepoBytes) : NA);
    return [t.tool, bytes(b), `${((100 * b) / size).toFixed(1)}%`, vs(restic), vs(borg)];
  });
  out.push(table(['Tool', 'Repo bytes', '% of image', '× restic', '× borg'], sizeRows), '');

  out.push('## Goals (lifeboat)', '');
  out.push(table(['Goal', 'Target', 'Measured', 'Status'], goalRows(r, lifeboat, restic, borg)), '');

  const reportedKeys = new Set([...Object.keys(lifeboat?.reported.first ?? {}), ...Object.keys(lifeboat?.reported.second ?? {})]);
  if (lifeboat && reportedKeys.size > 0) {
    out.push('## lifeboat reported (`disk backup --json` fields)', '');
    const cell = (v: unknown) => (typeof v === 'number' ? bytes(v) : v === undefined ? NA : String(v));
    const rows = [...reportedKeys].sort().map((k) => [`\`${k}\``, cell(lifeboat.reported.first?.[k]), cell(lifeboat.reported.second?.[k])]);
    out.push(table(['Field', 'First backup', 'Second backup'], rows), '');
  }

  if (r.chunkSweep) out.push(...chunkSizeSection(r, r.chunkSweep));

  const sweepResults = (r.chunkSweep?.rows ?? []).flatMap((row) => [row.scattered, row.clustered]);
  const failures = [
    ...(r.zstd.error ? [`zstd: failed: ${r.zstd.error}`] : []),
    ...[...r.tools, ...sweepResults].filter((t) => t.error).map((t) => `${t.tool}: failed: ${t.error}`),
  ];
  if (failures.length > 0) {
    out.push('## Failures', '');
    for (const f of failures) out.push(`- ${f.replace(/\s+/g, ' ')}`);
    out.push('');
  }

  out.push('## Commands', '');
  out.push(`- zstd: \`${r.zstd.command}\``);
  for (const t of r.tools) for (const c of t.commands) out.push(`- ${t.tool}: \`${c}\``);
  const sweepTool = r.chunkSweep?.rows[0]?.scattered;
  if (sweepTool) {
    for (const c of sweepTool.commands) out.push(`- chunk-size sweep: \`${c.replace(/--chunk-size \d+/, '--chunk-size <bytes>')}\``);
  }
  out.push('');
  return out.join('\n');
}

/** "## Chunk size": what each store chunk size costs on the full backup, restore, store and both changes. */
function chunkSizeSection(r: BenchResults, sweep: ChunkSweep): string[] {
  const size = r.image.sizeBytes;
  const scattered = r.mutation;
  const clustered = sweep.clusteredMutation;
  const out: string[] = [];
  out.push('## Chunk size', '');
  out.push(
    `lifeboat with \`store init --chunk-size <size>\`, one fresh store per size and change pattern, same image. ` +
      `Scattered change: ${bytes(scattered.blocks)} 4 KiB blocks at random offsets, compressed change ${bytes(scattered.compressedChangeBytes)} B. ` +
      `Clustered change: ${bytes(clustered.blocks)} 4 KiB blocks in ${bytes(clustered.runs)} runs of up to 1 MiB at random 4 KiB-aligned offsets, ` +
      `compressed change ${bytes(clustered.compressedChangeBytes)} B. ` +
      'First backup, restore and store size come from the scattered store; the restore is of its second backup.',
    '',
  );

  const fullRows = sweep.rows.map((row) => {
    const t = row.scattered;
    const f = t.first;
    const x = t.restore;
    const b = t.finalRepoBytes;
    return [
      sizeLabel(row.chunkSizeBytes),
      f ? secs(f.wallS) : FAILED,
      f ? mbps(size, f.wallS) : NA,
      f ? mib(f.peakRssKiB) : NA,
      x ? secs(x.wallS) : FAILED,
      x ? mbps(size, x.wallS) : NA,
      x ? mib(x.peakRssKiB) : NA,
      x ? (x.verified ? 'OK' : 'MISMATCH') : NA,
      b !== undefined && t.second ? bytes(b) : NA,
      b !== undefined && t.second ? `${((100 * b) / size).toFixed(1)}%` : NA,
    ];
  });
  out.push(
    table(
      ['Chunk', 'First wall s', 'First MB/s', 'First peak RSS MiB', 'Restore wall s', 'Restore MB/s', 'Restore peak RSS MiB', 'sha256', 'Store bytes after both', '% of image'],
      fullRows,
    ),
    '',
  );

  const incRows = sweep.rows.map((row) => {
    const cells = (t: ToolResult, change: number) => {
      const s = t.second;
      return s ? [secs(s.wallS), mib(s.peakRssKiB), bytes(s.addedBytes), ratio(s.addedBytes / change)] : [FAILED, NA, NA, NA];
    };
    return [sizeLabel(row.chunkSizeBytes), ...cells(row.scattered, scattered.compressedChangeBytes), ...cells(row.clustered, clustered.compressedChangeBytes)];
  });
  out.push(
    table(
      [
        'Chunk',
        'Scattered: wall s',
        'peak RSS MiB',
        'bytes added',
        '× compressed change',
        'Clustered: wall s',
        'peak RSS MiB',
        'bytes added',
        '× compressed change',
      ],
      incRows,
    ),
    '',
  );
  return out;
}

function goalRows(r: BenchResults, lb: ToolResult | undefined, restic: ToolResult | undefined, borg: ToolResult | undefined): string[][] {
  const status = (measured: number | undefined, ok: (m: number) => boolean) =>
    measured === undefined ? (lb?.error ? 'pending (lifeboat failed)' : 'not measured') : ok(measured) ? 'met' : 'missed';
  const show = (m: number | undefined) => (m === undefined ? NA : ratio(m));
  const zstd = r.zstd.figures?.wallS;

  const first = lb?.first && zstd ? lb.first.wallS / zstd : undefined;
  const bytesRatio = lb?.second ? lb.second.addedBytes / r.mutation.compressedChangeBytes : undefined;
  const timeRatio = lb?.second && restic?.second ? lb.second.wallS / restic.second.wallS : undefined;
  const speedup = lb?.restore && restic?.restore ? restic.restore.wallS / lb.restore.wallS : undefined;
  const verified = lb?.restore ? (lb.restore.verified ? 'OK' : 'MISMATCH') : undefined;
  const storeVs = (o: ToolResult | undefined) => (lb?.finalRepoBytes && o?.finalRepoBytes ? lb.finalRepoBytes / o.finalRepoBytes : undefined);
  const vsRestic = storeVs(restic);
  const vsBorg = storeVs(borg);
  return [
    ['First backup wall ÷ `zstd -1 -T2` wall', `≤ ${GOALS.firstBackupVsZstd}×`, show(first), status(first, (m) => m <= GOALS.firstBackupVsZstd)],
    [
      'Second backup bytes added ÷ compressed change',
      `≤ ${GOALS.secondBytesVsCompressedChange}×`,
      show(bytesRatio),
      status(bytesRatio, (m) => m <= GOALS.secondBytesVsCompressedChange),
    ],
    ['Second backup wall ÷ restic wall', `≤ ${GOALS.secondTimeVsRestic}×`, show(timeRatio), status(timeRatio, (m) => m <= GOALS.secondTimeVsRestic)],
    [
      'Restore: restic wall ÷ lifeboat wall',
      `≥ ${GOALS.restoreSpeedupVsRestic}×`,
      show(speedup),
      status(speedup, (m) => m >= GOALS.restoreSpeedupVsRestic),
    ],
    ['Restore sha256 matches source', 'OK', verified ?? NA, verified === undefined ? status(undefined, () => true) : verified === 'OK' ? 'met' : 'missed'],
    [
      'Store size ÷ restic, ÷ borg',
      'report',
      vsRestic === undefined ? NA : `${ratio(vsRestic)}, ${show(vsBorg)}`,
      vsRestic === undefined ? status(undefined, () => true) : 'reported',
    ],
  ];
}
