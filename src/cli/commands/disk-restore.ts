import type { Command } from 'commander';
import { PointReader } from '../../store/point-reader.js';
import { writeDisk } from '../../store/restore.js';
import { emit, formatBytes, progressFor, withRepo, type Env, type StoreFlags } from '../context.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('restore <point>')
    .description('write a recovery point to an image file (sparse, atomic) or a block device')
    .requiredOption('--to <target>', 'file or block device')
    .option('--assume-zeroed', 'the target device already reads as zeros: skip writing zero ranges')
    .option('--verify', 're-hash every chunk while restoring')
    .action(async (point: string, opts: StoreFlags & { to: string; assumeZeroed?: boolean; verify?: boolean }) => {
      await withRepo(opts, env, async (repo) => {
        const manifest = await repo.findPoint(point);
        const reader = await PointReader.open(repo, manifest, { verifyChunkIds: opts.verify, readAheadBytes: 0 });
        const progress = progressFor(opts, env, `restore ${manifest.pointId}`);
        const started = Date.now();
        const r = await writeDisk(reader, opts.to, { assumeZeroed: opts.assumeZeroed, onProgress: progress.update }).finally(() => reader.close());
        progress.done();
        const seconds = (Date.now() - started) / 1000;
        emit(
          opts,
          env,
          { pointId: manifest.pointId, target: opts.to, diskSizeBytes: manifest.diskSizeBytes, bytesWritten: r.bytesWritten, bytesFetched: reader.fetchedBytes, seconds },
          `restored ${manifest.pointId} (${formatBytes(manifest.diskSizeBytes)}) to ${opts.to}: wrote ${formatBytes(r.bytesWritten)}, fetched ${formatBytes(reader.fetchedBytes)} in ${seconds.toFixed(1)} s`,
        );
      });
    });
}
