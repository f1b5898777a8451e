import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import { verifyStore } from '../../store/verify.js';
import { emit, formatBytes, progressFor, withRepo, type Env, type StoreFlags } from '../context.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('verify')
    .description('check every object the store needs; --full also reads and authenticates all data')
    .option('--full', 'read every pack and segment, check every chunk')
    .action(async (opts: StoreFlags & { full?: boolean }) => {
      await withRepo(opts, env, async (repo) => {
        const progress = progressFor(opts, env, 'verify');
        const report = await verifyStore(repo, { full: opts.full, onProgress: progress.update });
        progress.done();
        const lines = [
          `${report.ok ? 'ok' : 'PROBLEMS FOUND'}: ${report.points} points, ${report.packs} packs, ${report.indexObjects} index objects, ${report.segments} journal segments, ${formatBytes(report.bytesRead)} read${report.full ? ' (full)' : ''}`,
          ...report.problems.map((p) => `  ${p.code} ${p.object}: ${p.message}`),
          ...(report.unreferencedPacks > 0 ? [`  note: ${report.unreferencedPacks} packs are unreferenced (left by an interrupted writer); store gc removes them`] : []),
        ];
        emit(opts, env, report, lines.join('\n'));
        if (!report.ok) {
          const first = report.problems[0] as { code: 'CORRUPT_OBJECT' | 'MISSING_OBJECT' };
          throw new LifeboatError(first.code === 'MISSING_OBJECT' ? 'MISSING_OBJECT' : 'CORRUPT_OBJECT', `verify found ${report.problems.length} problem(s)`, {
            details: { reported: true },
          });
        }
      });
    });
}
