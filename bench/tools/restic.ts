import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import { run, StepError, timed, versionOf } from '../exec.js';
import type { BackupTool, ToolDirs } from './tool.js';

const env = (dirs: ToolDirs) => ({
  RESTIC_REPOSITORY: dirs.repoDir,
  RESTIC_PASSWORD: 'bench',
  RESTIC_CACHE_DIR: join(dirs.homeDir, 'cache'),
});

/** restic with its defaults: repository v2 (zstd auto), content-defined chunks of ~1 MiB. */
export const restic: BackupTool = {
  name: 'restic',
  commands: [
    'restic init   (RESTIC_REPOSITORY, RESTIC_PASSWORD, RESTIC_CACHE_DIR set)',
    'restic backup --host bench -q disk.img   (cwd .bench/work; run twice)',
    'restic restore latest --target .bench/restore/restic   (0.14 has no --sparse)',
  ],
  version: () => versionOf('restic', ['version']),
  async init(dirs) {
    await run('restic', ['init', '-q'], { env: env(dirs) });
  },
  async backup(dirs) {
    const res = await timed('restic', ['backup', '--host', 'bench', '-q', 'disk.img'], { cwd: dirs.workDir, env: env(dirs) });
    return { ...res, reported: {} };
  },
  async restore(dirs) {
    const res = await timed('restic', ['restore', 'latest', '--target', dirs.restoreDir], { env: env(dirs) });
    return { ...res, restoredImage: findFile(dirs.restoreDir, 'disk.img') };
  },
};

/** restic restores the snapshot's absolute path below the target; find the file. */
function findFile(dir: string, name: string): string {
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name === name) return join(entry.parentPath, entry.name);
  }
  throw new StepError(`restore wrote no ${name} under ${dir}`);
}
