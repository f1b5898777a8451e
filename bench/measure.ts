import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { copySparse, duBytes, sha256File, StepError, syncAll, warmPageCache } from './exec.js';
import { BENCH_DIR } from './paths.js';
import type { ToolResult } from './report.js';
import type { BackupTool, ToolDirs } from './tools/tool.js';

export interface MeasureOptions {
  /** Name of the repository, restore and home directories under .bench/ (default: the tool's name). */
  readonly slot?: string;
  /** Restore the second backup and check it with sha256 (default true). */
  readonly restore?: boolean;
  readonly log: (msg: string) => void;
}

/**
 * One tool, fresh repository: init, full backup, change, second backup, restore, verify.
 * A failing step ends the tool's run; the result says which step and why.
 */
export async function measureTool(
  tool: BackupTool,
  image: { path: string },
  mutated: { path: string; sha256: string },
  opts: MeasureOptions,
): Promise<ToolResult> {
  const { log } = opts;
  const slot = opts.slot ?? tool.name;
  const result: ToolResult = { tool: slot, version: tool.version(), commands: tool.commands, reported: {} };
  const workDir = join(BENCH_DIR, 'work');
  const dirs: ToolDirs = {
    workDir,
    workImage: join(workDir, 'disk.img'),
    repoDir: join(BENCH_DIR, 'repos', slot),
    restoreDir: join(BENCH_DIR, 'restore', slot),
    homeDir: join(BENCH_DIR, 'home', slot),
  };
  for (const d of [dirs.repoDir, dirs.restoreDir, dirs.homeDir]) {
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
  }
  mkdirSync(workDir, { recursive: true });

  let step = 'prepare';
  try {
    log(`${slot}: preparing ${dirs.workImage}`);
    rmSync(dirs.workImage, { force: true });
    copySparse(image.path, dirs.workImage);
    warmPageCache(dirs.workImage);

    step = 'init';
    await tool.init(dirs);

    step = 'first backup';
    log(`${slot}: first backup`);
    syncAll();
    const first = await tool.backup(dirs, 'first');
    result.first = { wallS: first.wallS, peakRssKiB: first.peakRssKiB, repoBytes: duBytes(dirs.repoDir) };
    result.reported.first = first.reported;
    log(`${slot}: first backup ${first.wallS} s`);

    step = 'copy the mutated image over the work path';
    copySparse(mutated.path, dirs.workImage); // same path, same inode: only the content changed
    warmPageCache(dirs.workImage);

    step = 'second backup';
    log(`${slot}: second backup`);
    syncAll();
    const second = await tool.backup(dirs, 'second');
    const repoBytes = duBytes(dirs.repoDir);
    result.second = { wallS: second.wallS, peakRssKiB: second.peakRssKiB, repoBytes, addedBytes: repoBytes - result.first.repoBytes };
    result.reported.second = second.reported;
    log(`${slot}: second backup ${second.wallS} s`);

    if (opts.restore ?? true) {
      step = 'restore';
      log(`${slot}: restore`);
      syncAll();
      const restored = await tool.restore(dirs);
      step = 'verify restore';
      const verified = sha256File(restored.restoredImage) === mutated.sha256;
      result.restore = { wallS: restored.wallS, peakRssKiB: restored.peakRssKiB, verified };
      log(`${slot}: restore ${restored.wallS} s, sha256 ${verified ? 'OK' : 'MISMATCH'}`);
    }

    step = 'final repo size';
    result.finalRepoBytes = duBytes(dirs.repoDir);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    result.error = `${step}: ${message}`;
    log(`${slot}: failed: ${result.error}`);
    if (!(e instanceof StepError)) console.error(e);
  } finally {
    rmSync(dirs.restoreDir, { recursive: true, force: true }); // 2 GiB per tool; the verdict is recorded
  }
  return result;
}
