import type { Command } from 'commander';
import { basename } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import { backupPath } from '../../store/backup.js';
import { emit, formatBytes, progressFor, withRepo, type Env, type StoreFlags } from '../context.js';

interface BackupFlags extends StoreFlags {
  disk?: string;
  consistency: string;
  breakLock?: boolean;
  noParent?: boolean;
}

export function register(parent: Command, env: Env): void {
  parent
    .command('backup <source>')
    .description('make a recovery point of an image file or block device (incremental against the disk\'s newest point)')
    .option('--disk <name>', 'disk name in the store (default: the source file name)')
    .option('--consistency <kind>', 'crash or app (app only when the source was frozen)', 'crash')
    .option('--no-parent', 'do not name the newest point as parent (chunks are still deduplicated)')
    .option('--break-lock', 'take the disk over from a writer known to be dead')
    .action(async (source: string, opts: BackupFlags) => {
      if (opts.consistency !== 'crash' && opts.consistency !== 'app') throw new LifeboatError('USAGE', '--consistency must be crash or app');
      const disk = opts.disk ?? basename(source).replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[._-]+/, '');
      await withRepo(opts, env, async (repo) => {
        const progress = progressFor(opts, env, `backup ${disk}`);
        const started = Date.now();
        const r = await backupPath(repo, source, {
          disk,
          consistency: opts.consistency as 'crash' | 'app',
          breakLock: opts.breakLock,
          noParent: opts.noParent === false ? true : undefined,
          onProgress: progress.update,
        });
        progress.done();
        const seconds = (Date.now() - started) / 1000;
        emit(
          opts,
          env,
          {
            pointId: r.manifest.pointId,
            disk,
            parentPointId: r.manifest.parentPointId,
            diskSizeBytes: r.manifest.diskSizeBytes,
            newChunks: r.newChunks,
            reusedChunks: r.reusedChunks,
            zeroChunks: r.zeroChunks,
            bytesRead: r.bytesRead,
            bytesStored: r.bytesStored,
            seconds,
          },
          [
            r.manifest.pointId,
            `  disk ${disk}, ${formatBytes(r.manifest.diskSizeBytes)}, parent ${r.manifest.parentPointId ?? 'none'}`,
            `  read ${formatBytes(r.bytesRead)}, stored ${formatBytes(r.bytesStored)} (${r.newChunks} new, ${r.reusedChunks} reused, ${r.zeroChunks} zero chunks) in ${seconds.toFixed(1)} s`,
          ].join('\n'),
        );
      });
    });
}
