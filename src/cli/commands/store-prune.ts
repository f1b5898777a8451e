import type { Command } from 'commander';
import { prunePoints, type RetentionRules } from '../../store/prune.js';
import { emit, parseCount, parseDuration, withRepo, type Env, type StoreFlags } from '../context.js';

interface PruneFlags extends StoreFlags {
  keepLast?: string;
  keepWithin?: string;
  keepHourly?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
  disk?: string;
  dryRun?: boolean;
}

export function register(parent: Command, env: Env): void {
  parent
    .command('prune')
    .description('delete recovery points no retention rule keeps (the newest point of each disk is always kept); run gc after')
    .option('--keep-last <n>', 'keep the n newest points')
    .option('--keep-within <duration>', 'keep points younger than this (e.g. 24h, 7d)')
    .option('--keep-hourly <n>', 'keep the newest point of each of the last n hours')
    .option('--keep-daily <n>', 'keep the newest point of each of the last n days')
    .option('--keep-weekly <n>', 'keep the newest point of each of the last n weeks')
    .option('--keep-monthly <n>', 'keep the newest point of each of the last n months')
    .option('--disk <name>', 'only this disk')
    .option('--dry-run', 'say what would be deleted, delete nothing')
    .action(async (opts: PruneFlags) => {
      const rules: RetentionRules = {
        keepLast: opts.keepLast === undefined ? undefined : parseCount(opts.keepLast, '--keep-last'),
        keepWithinMs: opts.keepWithin === undefined ? undefined : parseDuration(opts.keepWithin),
        keepHourly: opts.keepHourly === undefined ? undefined : parseCount(opts.keepHourly, '--keep-hourly'),
        keepDaily: opts.keepDaily === undefined ? undefined : parseCount(opts.keepDaily, '--keep-daily'),
        keepWeekly: opts.keepWeekly === undefined ? undefined : parseCount(opts.keepWeekly, '--keep-weekly'),
        keepMonthly: opts.keepMonthly === undefined ? undefined : parseCount(opts.keepMonthly, '--keep-monthly'),
      };
      await withRepo(opts, env, async (repo) => {
        const r = await prunePoints(repo, rules, { disk: opts.disk, dryRun: opts.dryRun });
        emit(
          opts,
          env,
          { dryRun: r.dryRun, kept: r.kept.map((p) => p.pointId), removed: r.removed.map((p) => p.pointId) },
          [`${r.dryRun ? 'would remove' : 'removed'} ${r.removed.length} points, kept ${r.kept.length}`, ...r.removed.map((p) => `  - ${p.pointId} ${p.disk} ${p.createdAt}`)].join('\n'),
        );
      });
    });
}
