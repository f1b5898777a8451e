import type { Command } from 'commander';
import { listSegments, processJournal } from '../../store/journal.js';
import { emit, formatBytes, withRepo, type Env, type StoreFlags } from '../context.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('process <disk>')
    .description('fold pending journal segments of a disk into a new recovery point (refuses a sequence gap)')
    .option('--consistency <kind>', 'crash or app', 'crash')
    .action(async (disk: string, opts: StoreFlags & { consistency: 'crash' | 'app' }) => {
      await withRepo(opts, env, async (repo) => {
        const m = await processJournal(repo, disk, { consistency: opts.consistency });
        emit(opts, env, m ? { pointId: m.pointId, source: m.source } : { pointId: null }, m ? `${m.pointId} (generation ${m.source.generation}, through sequence ${m.source.lastSequence})` : 'nothing pending');
      });
    });
  parent
    .command('list <disk>')
    .description('list the journal segments stored for a disk')
    .action(async (disk: string, opts: StoreFlags) => {
      await withRepo(opts, env, async (repo) => {
        const segs = await listSegments(repo, disk);
        emit(opts, env, segs, segs.length === 0 ? 'no segments' : segs.map((s) => `${s.generation}/${s.sequence}  ${formatBytes(s.sizeBytes)}`).join('\n'));
      });
    });
}
