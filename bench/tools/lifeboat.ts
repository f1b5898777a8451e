import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { run, StepError, tail, timed, versionOf } from '../exec.js';
import { ROOT } from '../paths.js';
import type { BackupTool, ToolDirs } from './tool.js';

const CLI = join(ROOT, 'bin', 'lifeboat.js');
const DISK = 'bench';

const env = (dirs: ToolDirs) => ({
  LIFEBOAT_PASSPHRASE: 'bench',
  LIFEBOAT_STORE: pathToFileURL(dirs.repoDir).href,
});

/** The point id of the last backup, per store; restore restores it. */
const lastPoint = new Map<string, string>();

/**
 * Our tool through its real CLI (`node bin/lifeboat.js`, which runs the built dist/),
 * so the numbers include start-up exactly as a user sees it. The second backup names
 * the same disk; the tool finds the parent point itself.
 *
 * Every scalar field of `disk backup --json` output other than pointId (bytesWritten,
 * bytesRead, blocksChanged, ...) is carried into the report's "lifeboat reported" table.
 */
export const lifeboat: BackupTool = lifeboatWithChunkSize(undefined);

/**
 * lifeboat on a store made by `store init --chunk-size <bytes>` (the chunk-size sweep);
 * `undefined` leaves the flag off, so the store gets the CLI's default. init checks
 * that the store reports the chunk size asked for, so a flag the CLI ignored cannot
 * pass as a measurement of that size.
 */
export function lifeboatWithChunkSize(chunkSizeBytes: number | undefined): BackupTool {
  const chunkFlag = chunkSizeBytes === undefined ? [] : ['--chunk-size', String(chunkSizeBytes)];
  const initShown = chunkSizeBytes === undefined ? 'store init --json' : `store init --chunk-size ${chunkSizeBytes} --json`;
  return {
    name: 'lifeboat',
    commands: [
      `node bin/lifeboat.js ${initShown}   (LIFEBOAT_PASSPHRASE, LIFEBOAT_STORE=file://<abs .bench/repos/<name>>)`,
      `node bin/lifeboat.js disk backup <abs .bench/work/disk.img> --disk ${DISK} --json   (run twice)`,
      'node bin/lifeboat.js disk restore <pointId of second backup> --to .bench/restore/<name>/disk.img --json',
    ],
    version: () => {
      const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
      return `lifeboat ${pkg.version} (git ${versionOf('git', ['-C', ROOT, 'describe', '--always', '--dirty'])})`;
    },
    async init(dirs) {
      const res = await run('node', [CLI, 'store', 'init', ...chunkFlag, '--json'], { cwd: ROOT, env: env(dirs) });
      if (chunkSizeBytes !== undefined) {
        const got = parseJsonOutput(res.stdout, 'store init')['chunkSizeBytes'];
        if (got !== chunkSizeBytes) throw new StepError(`store init --chunk-size ${chunkSizeBytes} made a store with chunkSizeBytes ${String(got)}`);
      }
    },
    async backup(dirs) {
      const res = await timed('node', [CLI, 'disk', 'backup', dirs.workImage, '--disk', DISK, '--json'], { cwd: ROOT, env: env(dirs) });
      const out = parseJsonOutput(res.stdout, 'disk backup');
      const pointId = out['pointId'];
      if (typeof pointId !== 'string' || pointId === '') {
        throw new StepError(`disk backup --json printed no pointId: ${tail(res.stdout)}`);
      }
      lastPoint.set(dirs.repoDir, pointId);
      const reported: Record<string, string | number | boolean> = {};
      for (const [k, v] of Object.entries(out)) {
        if (k !== 'pointId' && (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean')) reported[k] = v;
      }
      return { ...res, reported };
    },
    async restore(dirs) {
      const pointId = lastPoint.get(dirs.repoDir);
      if (pointId === undefined) throw new StepError('no point to restore: the backups did not run');
      const target = join(dirs.restoreDir, 'disk.img');
      const res = await timed('node', [CLI, 'disk', 'restore', pointId, '--to', target, '--json'], { cwd: ROOT, env: env(dirs) });
      return { ...res, restoredImage: target };
    },
  };
}

/** The JSON object a --json command printed: the whole stdout, or else its last line that parses. */
function parseJsonOutput(stdout: string, what: string): Record<string, unknown> {
  const candidates = [stdout.trim(), ...stdout.trim().split('\n').reverse()];
  for (const text of candidates) {
    try {
      const value: unknown = JSON.parse(text);
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
    } catch {
      // not this candidate; try the next
    }
  }
  throw new StepError(`${what} --json printed no JSON object: ${tail(stdout)}`);
}
