import { join } from 'node:path';
import { run, timed, versionOf } from '../exec.js';
import type { BackupTool, ToolDirs } from './tool.js';

const env = (dirs: ToolDirs) => ({
  BORG_PASSPHRASE: 'bench',
  // Cache, config and security dirs all live under BORG_BASE_DIR, inside .bench.
  BORG_BASE_DIR: dirs.homeDir,
});

/** borg with repokey-blake2, zstd level 3 and its default content-defined chunker (~2 MiB). */
export const borg: BackupTool = {
  name: 'borg',
  commands: [
    'borg init -e repokey-blake2 .bench/repos/borg   (BORG_PASSPHRASE, BORG_BASE_DIR set)',
    'borg create --compression zstd,3 .bench/repos/borg::{first,second} disk.img   (cwd .bench/work)',
    'borg extract --sparse .bench/repos/borg::second   (cwd .bench/restore/borg)',
  ],
  version: () => versionOf('borg', ['--version']),
  async init(dirs) {
    await run('borg', ['init', '-e', 'repokey-blake2', dirs.repoDir], { env: env(dirs) });
  },
  async backup(dirs, label) {
    const res = await timed('borg', ['create', '--compression', 'zstd,3', `${dirs.repoDir}::${label}`, 'disk.img'], {
      cwd: dirs.workDir,
      env: env(dirs),
    });
    return { ...res, reported: {} };
  },
  async restore(dirs) {
    const res = await timed('borg', ['extract', '--sparse', `${dirs.repoDir}::second`], { cwd: dirs.restoreDir, env: env(dirs) });
    return { ...res, restoredImage: join(dirs.restoreDir, 'disk.img') };
  },
};
