/**
 * `npm run bench`: one generated ext4 image, our tool and its peers measured in the
 * same run, a markdown report on stdout (and in --out). docs/benchmarks.md explains
 * every number and the goals. Progress goes to stderr so stdout stays markdown.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runChunkSweep } from './chunk-sweep.js';
import { renderControlPlane, runControlPlane } from './control-plane.js';
import { runIngest } from './ingest.js';
import { syncAll, timed, warmPageCache } from './exec.js';
import { ensureImage } from './image.js';
import { machineFacts } from './machine.js';
import { measureTool } from './measure.js';
import { ensureMutated } from './mutate.js';
import { parseOptions, parseRecoveryOptions, RECOVERY_USAGE, USAGE } from './options.js';
import type { BenchOptions, ToolName } from './options.js';
import { BENCH_DIR } from './paths.js';
import { renderRecovery, runRecovery } from './recovery.js';
import { REPLICATION_DEFAULTS, renderReplication, runReplication } from './replication.js';
import { renderMarkdown } from './report.js';
import type { BenchResults, ToolResult } from './report.js';
import { borg } from './tools/borg.js';
import { lifeboat } from './tools/lifeboat.js';
import { restic } from './tools/restic.js';
import type { BackupTool } from './tools/tool.js';

const BACKUP_TOOLS: Readonly<Record<Exclude<ToolName, 'zstd'>, BackupTool>> = { restic, borg, lifeboat };

const startedMs = Date.now();
const log = (msg: string) => console.error(`[bench +${((Date.now() - startedMs) / 1000).toFixed(0)}s] ${msg}`);

/** Tools the harness itself needs; without them there is nothing to measure. */
function requirePrerequisites(): void {
  const needed: [string, string][] = [
    ['/usr/bin/time', 'time'],
    ['zstd', 'zstd'],
    ['mkfs.ext4', 'e2fsprogs'],
    ['debugfs', 'e2fsprogs'],
  ];
  for (const [cmd, pkg] of needed) {
    try {
      execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${cmd} is not installed: apt-get install -y ${pkg}`);
    }
  }
}

function commandLine(argv: readonly string[]): string {
  const args = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
  if (process.env['npm_lifecycle_event'] === 'bench') return `npm run bench${args ? ` -- ${args}` : ''}`;
  return `node --import tsx bench/run.ts${args ? ` ${args}` : ''}`;
}

/**
 * The control-plane load (bench/control-plane.ts) as a markdown section; raw figures in
 * .bench/results-control-plane.json. After the disk suite a failure becomes a line in
 * the report, as a failed tool does; alone (--control-plane) it fails the run.
 */
async function controlPlaneSection(opts: BenchOptions, argv: readonly string[], alone: boolean): Promise<string> {
  try {
    const cp = await runControlPlane(opts.controlPlane, commandLine(argv), log);
    writeFileSync(join(BENCH_DIR, 'results-control-plane.json'), `${JSON.stringify(cp, null, 2)}\n`);
    return renderControlPlane(cp);
  } catch (e) {
    if (alone) throw e;
    log(`control plane: failed: ${(e as Error).message}`);
    return `## Control plane\n\ncontrol plane: failed: ${(e as Error).message}\n`;
  }
}

const REPLICATION_USAGE = `usage: npm run -s bench -- --replication [--rates 5,20,50] [--duration 60] [--out FILE]
       npm run -s bench -- --ingest [--ingest-streams 4,8] [--ingest-mib 256] [--out FILE]
  (both flags together run both; see docs/benchmarks.md, "Continuous replication")`;

/**
 * --replication and --ingest: the continuous-replication benchmarks (bench/replication.ts,
 * bench/ingest.ts), on their own, without the disk suite. Raw figures go to
 * .bench/results-replication.json.
 */
async function replicationMain(argv: readonly string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        replication: { type: 'boolean', default: false },
        ingest: { type: 'boolean', default: false },
        rates: { type: 'string', default: REPLICATION_DEFAULTS.ratesMBps.join(',') },
        duration: { type: 'string', default: String(REPLICATION_DEFAULTS.durationS) },
        'ingest-streams': { type: 'string', default: '4,8' },
        'ingest-mib': { type: 'string', default: '256' },
        out: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${REPLICATION_USAGE}`);
    return 2;
  }
  const rates = values.rates.split(',').map(Number);
  const durationS = Number(values.duration);
  const streams = values['ingest-streams'].split(',').map(Number);
  const mib = Number(values['ingest-mib']);
  if (rates.some((r) => !(r > 0 && r <= 2000)) || !Number.isInteger(durationS) || durationS < 1 || durationS > 3600 || streams.some((n) => !Number.isInteger(n) || n < 1 || n > 64) || !(Number.isInteger(mib) && mib >= 1)) {
    console.error(`invalid --rates, --duration, --ingest-streams or --ingest-mib\n\n${REPLICATION_USAGE}`);
    return 2;
  }
  const sections: string[] = [];
  const raw: Record<string, unknown> = {};
  if (values.replication) {
    const report = await runReplication({ ...REPLICATION_DEFAULTS, ratesMBps: rates, durationS }, commandLine(argv), log);
    raw['replication'] = report;
    sections.push(renderReplication(report));
    process.stdout.write(sections[sections.length - 1] as string);
  }
  if (values.ingest) {
    const ingest = await runIngest({ streams, perStreamMiB: mib, segmentMiB: 4, workers: 2 }, log);
    raw['ingest'] = ingest;
    sections.push(ingest.markdown);
    process.stdout.write(`${sections.length > 1 ? '\n' : ''}${ingest.markdown}`);
  }
  writeFileSync(join(BENCH_DIR, 'results-replication.json'), `${JSON.stringify(raw, null, 2)}\n`);
  if (values.out !== undefined) writeFileSync(resolve(process.env['INIT_CWD'] ?? process.cwd(), values.out), sections.join('\n'));
  return 0;
}

/**
 * --recovery: the recovery benchmark (bench/recovery.ts) on its own: test failover →
 * boot marker per disk size, bytes shipped by failback. Raw figures go to
 * .bench/results-recovery.json.
 */
async function recoveryMain(argv: readonly string[]): Promise<number> {
  let opts;
  try {
    opts = parseRecoveryOptions(argv);
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${RECOVERY_USAGE}`);
    return 2;
  }
  const report = await runRecovery(opts.recovery, commandLine(argv), log);
  const markdown = renderRecovery(report);
  process.stdout.write(markdown);
  writeFileSync(join(BENCH_DIR, 'results-recovery.json'), `${JSON.stringify(report, null, 2)}\n`);
  if (opts.outPath !== undefined) writeFileSync(resolve(process.env['INIT_CWD'] ?? process.cwd(), opts.outPath), markdown);
  return report.sizes.every((s) => s.outcome === 'passed') && !(report.failback && !report.failback.available && report.failback.failed) ? 0 : 1;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv.includes('--recovery')) {
    mkdirSync(BENCH_DIR, { recursive: true });
    return recoveryMain(argv);
  }
  if (argv.includes('--replication') || argv.includes('--ingest')) {
    mkdirSync(BENCH_DIR, { recursive: true });
    return replicationMain(argv);
  }
  let opts;
  try {
    opts = parseOptions(argv);
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  mkdirSync(BENCH_DIR, { recursive: true });
  if (opts.controlPlaneOnly) {
    const markdown = await controlPlaneSection(opts, argv, true);
    process.stdout.write(markdown);
    if (opts.outPath !== undefined) writeFileSync(resolve(process.env['INIT_CWD'] ?? process.cwd(), opts.outPath), markdown);
    return 0;
  }
  requirePrerequisites();
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg()[0] ?? 0;

  const image = ensureImage(opts.imageSizeBytes, opts.seed, log);
  const mutation = await ensureMutated(image, 'scattered', log);
  // The clustered change is only used by the chunk-size sweep.
  const clustered = opts.chunkSizesBytes.length > 0 ? await ensureMutated(image, 'clustered', log) : undefined;

  const zstdCommand = 'zstd -1 -T2 -c <image> > /dev/null';
  const zstd: BenchResults['zstd'] = { command: zstdCommand };
  if (opts.tools.includes('zstd')) {
    log('zstd -1 -T2: reading the image');
    try {
      warmPageCache(image.path);
      syncAll();
      const res = await timed('zstd', ['-1', '-T2', '-c', image.path], { stdout: 'null' });
      zstd.figures = { wallS: res.wallS, peakRssKiB: res.peakRssKiB };
      log(`zstd -1 -T2: ${res.wallS} s`);
    } catch (e) {
      zstd.error = (e as Error).message;
      log(`zstd: failed: ${zstd.error}`);
    }
  }

  const tools: ToolResult[] = [];
  for (const name of opts.tools) {
    if (name !== 'zstd') tools.push(await measureTool(BACKUP_TOOLS[name], image, mutation, { log }));
  }
  const chunkSweep = clustered ? await runChunkSweep(opts.chunkSizesBytes, image, mutation, clustered, log) : undefined;

  const versions = Object.fromEntries(tools.map((t) => [t.tool, t.version]));
  if (chunkSweep) versions['lifeboat'] = lifeboat.version();
  const results: BenchResults = {
    commandLine: commandLine(argv),
    startedAt,
    totalWallS: (Date.now() - startedMs) / 1000,
    machine: machineFacts(BENCH_DIR, versions, loadAtStart),
    image,
    mutation,
    zstd,
    tools,
    ...(chunkSweep && clustered ? { chunkSweep: { clusteredMutation: clustered, rows: chunkSweep } } : {}),
  };
  let markdown = renderMarkdown(results);
  process.stdout.write(markdown);
  if (!opts.skipControlPlane) {
    const section = await controlPlaneSection(opts, argv, false);
    process.stdout.write(`\n${section}`);
    markdown += `\n${section}`;
  }
  writeFileSync(join(BENCH_DIR, `results-${image.sizeBytes}.json`), `${JSON.stringify(results, null, 2)}\n`);
  if (opts.outPath !== undefined) {
    const out = resolve(process.env['INIT_CWD'] ?? process.cwd(), opts.outPath);
    writeFileSync(out, markdown);
    log(`report written to ${out}`);
  }
  // A restore that does not match its source is a correctness failure, not a slow run.
  const restores = [...tools, ...(chunkSweep ?? []).flatMap((r) => [r.scattered, r.clustered])];
  return restores.some((t) => t.restore && !t.restore.verified) ? 1 : 0;
}

process.exitCode = await main();
