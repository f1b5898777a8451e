import type { Command } from 'commander';
import { emit, formatBytes, withRepo, type Env, type StoreFlags } from '../context.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('list')
    .description('list recovery points, oldest first')
    .option('--disk <name>', 'only this disk')
    .action(async (opts: StoreFlags & { disk?: string }) => {
      await withRepo(opts, env, async (repo) => {
        const points = await repo.listPoints(opts.disk);
        const rows = points.map((p) =>
          [p.pointId, p.disk, p.createdAt, p.consistency, formatBytes(p.diskSizeBytes), p.origin, `${p.source.generation}/${p.source.lastSequence}`, p.parentPointId ?? '-'].join('  '),
        );
        emit(opts, env, points, points.length === 0 ? 'no recovery points' : ['POINT  DISK  CREATED  CONSISTENCY  SIZE  ORIGIN  GEN/SEQ  PARENT', ...rows].join('\n'));
      });
    });
}
