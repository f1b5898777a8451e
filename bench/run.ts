/**
 * `npm run bench`: one generated ext4 image, our tool and its peers measured in the
 * same run, a markdown report on stdout (and in --out). docs/benchmarks.md explains
 * every number and the goals. Progress goes to stderr so stdout stays markdown.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { copySparse, duBytes, sha256File, StepError, syncAll, timed, warmPageCache } from './exec.js';
import { ensureImage } from './image.js';
import { machineFacts } from './machine.js';
import { ensureMutated } from './mutate.js';
import { parseOptions, USAGE } from './options.js';
import type { ToolName } from './options.js';
import { BENCH_DIR } from './paths.js';
import { renderMarkdown } from './report.js';
import type { BenchResults, ToolResult } from './report.js';
import { borg } from './tools/borg.js';
import { lifeboat } from './tools/lifeboat.js';
import { restic } from './tools/restic.js';
import type { BackupTool, ToolDirs } from './tools/tool.js';

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

/** One tool, fresh repository: init, full backup, change, second backup, restore, verify. */
async function measureTool(tool: BackupTool, image: { path: string }, mutated: { path: string; sha256: string }): Promise<ToolResult> {
  const result: ToolResult = { tool: tool.name, version: tool.version(), commands: tool.commands, reported: {} };
  const workDir = join(BENCH_DIR, 'work');
  const dirs: ToolDirs = {
    workDir,
    workImage: join(workDir, 'disk.img'),
    repoDir: join(BENCH_DIR, 'repos', tool.name),
    restoreDir: join(BENCH_DIR, 'restore', tool.name),
    homeDir: join(BENCH_DIR, 'home', tool.name),
  };
  for (const d of [dirs.repoDir, dirs.restoreDir, dirs.homeDir]) {
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
  }
  mkdirSync(workDir, { recursive: true });

  let step = 'prepare';
  try {
    log(`${tool.name}: preparing ${dirs.workImage}`);
    rmSync(dirs.workImage, { force: true });
    copySparse(image.path, dirs.workImage);
    warmPageCache(dirs.workImage);

    step = 'init';
    await tool.init(dirs);

    step = 'first backup';
    log(`${tool.name}: first backup`);
    syncAll();
    const first = await tool.backup(dirs, 'first');
    result.first = { wallS: first.wallS, peakRssKiB: first.peakRssKiB, repoBytes: duBytes(dirs.repoDir) };
    result.reported.first = first.reported;
    log(`${tool.name}: first backup ${first.wallS} s`);

    step = 'copy the mutated image over the work path';
    copySparse(mutated.path, dirs.workImage); // same path, same inode: only the content changed
    warmPageCache(dirs.workImage);

    step = 'second backup';
    log(`${tool.name}: second backup`);
    syncAll();
    const second = await tool.backup(dirs, 'second');
    const repoBytes = duBytes(dirs.repoDir);
    result.second = { wallS: second.wallS, peakRssKiB: second.peakRssKiB, repoBytes, addedBytes: repoBytes - result.first.repoBytes };
    result.reported.second = second.reported;
    log(`${tool.name}: second backup ${second.wallS} s`);

    step = 'restore';
    log(`${tool.name}: restore`);
    syncAll();
    const restored = await tool.restore(dirs);
    step = 'verify restore';
    const verified = sha256File(restored.restoredImage) === mutated.sha256;
    result.restore = { wallS: restored.wallS, peakRssKiB: restored.peakRssKiB, verified };
    log(`${tool.name}: restore ${restored.wallS} s, sha256 ${verified ? 'OK' : 'MISMATCH'}`);

    step = 'final repo size';
    result.finalRepoBytes = duBytes(dirs.repoDir);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    result.error = `${step}: ${message}`;
    log(`${tool.name}: failed: ${result.error}`);
    if (!(e instanceof StepError)) console.error(e);
  } finally {
    rmSync(dirs.restoreDir, { recursive: true, force: true }); // 2 GiB per tool; the verdict is recorded
  }
  return result;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let opts;
  try {
    opts = parseOptions(argv);
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  requirePrerequisites();
  mkdirSync(BENCH_DIR, { recursive: true });
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg()[0] ?? 0;

  const image = ensureImage(opts.imageSizeBytes, opts.seed, log);
  const mutation = await ensureMutated(image, log);

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
    if (name !== 'zstd') tools.push(await measureTool(BACKUP_TOOLS[name], image, mutation));
  }

  const results: BenchResults = {
    commandLine: commandLine(argv),
    startedAt,
    totalWallS: (Date.now() - startedMs) / 1000,
    machine: machineFacts(BENCH_DIR, Object.fromEntries(tools.map((t) => [t.tool, t.version])), loadAtStart),
    image,
    mutation,
    zstd,
    tools,
  };
  const markdown = renderMarkdown(results);
  process.stdout.write(markdown);
  writeFileSync(join(BENCH_DIR, `results-${image.sizeBytes}.json`), `${JSON.stringify(results, null, 2)}\n`);
  if (opts.outPath !== undefined) {
    const out = resolve(process.env['INIT_CWD'] ?? process.cwd(), opts.outPath);
    writeFileSync(out, markdown);
    log(`report written to ${out}`);
  }
  // A restore that does not match its source is a correctness failure, not a slow run.
  return tools.some((t) => t.restore && !t.restore.verified) ? 1 : 0;
}

process.exitCode = await main();
