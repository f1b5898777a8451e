import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import { startNbdServer } from '../../nbd/server.js';
import { PointReader } from '../../store/point-reader.js';
import { emit, parseBytes, withRepo, type Env, type StoreFlags } from '../context.js';

interface ServeFlags extends StoreFlags {
  listen: string;
  socket?: string;
  name: string;
  cache: string;
}

export function register(parent: Command, env: Env, signals: AbortSignal): void {
  parent
    .command('serve <point>')
    .description('serve a recovery point read-only over NBD, straight from the store, until interrupted')
    .option('--listen <host:port>', 'TCP address (loopback by default; port 0 picks one)', '127.0.0.1:10809')
    .option('--socket <path>', 'listen on a Unix socket instead')
    .option('--name <export>', 'export name', 'disk')
    .option('--cache <bytes>', 'decoded-chunk cache size', '256M')
    .action(async (point: string, opts: ServeFlags) => {
      const m = /^(.*):(\d+)$/.exec(opts.listen);
      if (!opts.socket && !m) throw new LifeboatError('USAGE', '--listen must be HOST:PORT');
      await withRepo(opts, env, async (repo) => {
        const manifest = await repo.findPoint(point);
        const reader = await PointReader.open(repo, manifest, { cacheBytes: parseBytes(opts.cache) });
        const server = await startNbdServer({
          exports: { [opts.name]: reader },
          listen: opts.socket ? { socketPath: opts.socket } : { host: (m as RegExpExecArray)[1] as string, port: Number((m as RegExpExecArray)[2]) },
        });
        const uri = server.uri(opts.name);
        emit(opts, env, { pointId: manifest.pointId, uri, diskSizeBytes: manifest.diskSizeBytes }, `serving ${manifest.pointId} read-only at ${uri} (Ctrl-C stops)`);
        await new Promise<void>((resolve) => {
          if (signals.aborted) resolve();
          signals.addEventListener('abort', () => resolve(), { once: true });
        });
        await server.close();
        await reader.close();
      });
    });
}
