import { Command, CommanderError, Option } from 'commander';
import { ERROR_CODES, asLifeboatError, LifeboatError } from '../core/errors.js';
import type { Env } from './context.js';
import * as diskBackup from './commands/disk-backup.js';
import * as diskExport from './commands/disk-export.js';
import * as diskRestore from './commands/disk-restore.js';
import * as diskServe from './commands/disk-serve.js';
import * as journalProcess from './commands/journal-process.js';
import * as pointList from './commands/point-list.js';
import * as quickstart from './commands/quickstart.js';
import * as server from './commands/server.js';
import * as storeGc from './commands/store-gc.js';
import * as storeInit from './commands/store-init.js';
import * as storePrune from './commands/store-prune.js';
import * as storeVerify from './commands/store-verify.js';

export const VERSION = '0.1.0';

/** Builds the command tree. Every leaf command gets the store options. */
export function buildProgram(env: Env, signals: AbortSignal): Command {
  const program = new Command('lifeboat')
    .description('Lifeboat: disk replication to object storage, recovery points, restore and instant NBD serve')
    .version(VERSION)
    .exitOverride()
    .configureOutput({ writeOut: (s) => env.stdout.write(s), writeErr: (s) => env.stderr.write(s), outputError: () => undefined });
  const store = program.command('store').description('create, check and clean a store');
  storeInit.register(store, env);
  storeVerify.register(store, env);
  storePrune.register(store, env);
  storeGc.register(store, env);
  const disk = program.command('disk').description('back up, restore, export and serve disks');
  diskBackup.register(disk, env);
  diskRestore.register(disk, env);
  diskExport.register(disk, env);
  diskServe.register(disk, env, signals);
  const point = program.command('point').description('recovery points');
  pointList.register(point, env);
  const journal = program.command('journal').description('journal segments: changed extents shipped between points');
  journalProcess.register(journal, env);
  quickstart.register(program, env);
  server.register(program, env, signals);

  const leaves = (c: Command): Command[] => (c.commands.length === 0 ? [c] : c.commands.flatMap(leaves));
  for (const leaf of leaves(program)) {
    leaf.exitOverride();
    leaf.configureOutput({ writeOut: (s) => env.stdout.write(s), writeErr: (s) => env.stderr.write(s), outputError: () => undefined });
    if (leaf.name() === 'quickstart') continue;
    if (leaf.name() === 'server') {
      leaf.option('--json', 'print the URL and admin token as JSON');
      continue;
    }
    leaf.addOption(new Option('--store <url>', 'store URL: file:///path, azblob://account/container, s3://bucket/prefix').env('LIFEBOAT_STORE'));
    leaf.option('--passphrase-file <file>', 'read the passphrase (or recovery key) from the first line of this file; else LIFEBOAT_PASSPHRASE');
    leaf.option('--json', 'print the result as JSON for scripts');
    leaf.option('-q, --quiet', 'no progress output');
  }
  return program;
}

/**
 * Runs the CLI and returns the exit code. Exit codes come from the error
 * registry in one place (docs/errors.md lists them).
 */
export async function main(argv: string[], env: Env = { env: process.env, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const json = argv.includes('--json');
  try {
    await buildProgram(env, abort.signal).parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) return 0; // --help, --version
    const e =
      err instanceof CommanderError
        ? new LifeboatError('USAGE', err.message.replace(/^error: /, ''), { details: { commander: err.code } })
        : asLifeboatError(err);
    // A command that already printed its --json result (verify's report) is not followed by a second document.
    if (json && e.details.reported !== true) env.stdout.write(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n');
    env.stderr.write(`lifeboat: ${e.code}: ${e.message}\n`);
    if (e.hint) env.stderr.write(`Try: ${e.hint}\n`);
    else if (e.code === 'USAGE') env.stderr.write('Try: lifeboat --help, or lifeboat COMMAND --help\n');
    if (e.code === 'INTERNAL' && e.stack) env.stderr.write(`${e.stack}\n`);
    return ERROR_CODES[e.code].exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export { LifeboatError };
