import type { Command } from 'commander';
import { collectGarbage, DEFAULT_GC_MARGIN_MS } from '../../store/gc.js';
import { emit, formatBytes, parseDuration, withRepo, type Env, type StoreFlags } from '../context.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('gc')
    .description('delete data no recovery point needs (mark and sweep; objects younger than the safety margin are kept)')
    .option('--safety-margin <duration>', 'never delete objects younger than this', `${DEFAULT_GC_MARGIN_MS / 60000}m`)
    .option('--dry-run', 'say what would be deleted, delete nothing')
    .action(async (opts: StoreFlags & { safetyMargin: string; dryRun?: boolean }) => {
      await withRepo(opts, env, async (repo) => {
        const r = await collectGarbage(repo, { safetyMarginMs: parseDuration(opts.safetyMargin), dryRun: opts.dryRun });
        emit(
          opts,
          env,
          r,
          [
            `${r.dryRun ? 'would delete' : 'deleted'} ${r.deletedPacks} packs (${formatBytes(r.deletedBytes)}), ${r.deletedSegments} journal segments, ${r.deletedOrphanIndexes} orphan point indexes; ${r.livePacks} packs live`,
            ...(r.deferred ? [`deferred: ${r.activeWriters} writer(s) at work, unreferenced data kept until they finish`] : []),
          ].join('\n'),
        );
      });
    });
}
