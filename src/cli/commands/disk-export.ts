import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import { exportImage, IMAGE_FORMATS, type ImageFormat } from '../../export/index.js';
import { PointReader } from '../../store/point-reader.js';
import { emit, progressFor, withRepo, type Env, type StoreFlags } from '../context.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('export <point>')
    .description('write a recovery point as a raw, qcow2 or VHD image file')
    .requiredOption('--format <format>', `one of ${IMAGE_FORMATS.join(', ')} (vhd is dynamic; vhd-fixed is what Azure imports)`)
    .requiredOption('--to <file>', 'target file')
    .action(async (point: string, opts: StoreFlags & { format: string; to: string }) => {
      if (!(IMAGE_FORMATS as readonly string[]).includes(opts.format)) {
        throw new LifeboatError('USAGE', `--format must be one of ${IMAGE_FORMATS.join(', ')}`);
      }
      await withRepo(opts, env, async (repo) => {
        const manifest = await repo.findPoint(point);
        const reader = await PointReader.open(repo, manifest);
        const progress = progressFor(opts, env, `export ${manifest.pointId}`);
        const started = Date.now();
        await exportImage(reader, {
          format: opts.format as ImageFormat,
          path: opts.to,
          onProgress: (done, total) => progress.update({ phase: 'export', doneBytes: done, totalBytes: total }),
        }).finally(() => reader.close());
        progress.done();
        const seconds = (Date.now() - started) / 1000;
        emit(opts, env, { pointId: manifest.pointId, format: opts.format, target: opts.to, seconds }, `exported ${manifest.pointId} as ${opts.format} to ${opts.to} in ${seconds.toFixed(1)} s`);
      });
    });
}
