import { Command, CommanderError, Option } from 'commander';
import { ERROR_CODES, asLifeboatError, LifeboatError } from '../core/errors.js';
import type { Env } from './context.js';
import { isApiCommand } from './profile.js';
import * as accountAdd from './commands/account-add.js';
import * as agentEnroll from './commands/agent-enroll.js';
import * as agentRun from './commands/agent-run.js';
import * as agentStatus from './commands/agent-status.js';
import * as alertList from './commands/alert-list.js';
import * as configServerList from './commands/config-server-list.js';
import * as configServerRefresh from './commands/config-server-refresh.js';
import * as configServerRegister from './commands/config-server-register.js';
import * as itemList from './commands/item-list.js';
import * as itemShow from './commands/item-show.js';
import * as jobList from './commands/job-list.js';
import * as jobShow from './commands/job-show.js';
import * as jobWatch from './commands/job-watch.js';
import * as login from './commands/login.js';
import * as logout from './commands/logout.js';
import * as machineAdd from './commands/machine-add.js';
import * as machineCheck from './commands/machine-check.js';
import * as machineList from './commands/machine-list.js';
import * as policyCreate from './commands/policy-create.js';
import * as policyList from './commands/policy-list.js';
import * as policyShow from './commands/policy-show.js';
import * as registrationKeyCreate from './commands/registration-key-create.js';
import * as replicationEnable from './commands/replication-enable.js';
import * as replicationPause from './commands/replication-pause.js';
import * as replicationResume from './commands/replication-resume.js';
import * as replicationThrottle from './commands/replication-throttle.js';
import * as itemEnrollToken from './commands/item-enroll-token.js';
import * as userCreate from './commands/user-create.js';
import * as userList from './commands/user-list.js';
import * as userSetPassword from './commands/user-set-password.js';
import * as vaultCheck from './commands/vault-check.js';
import * as vaultCreate from './commands/vault-create.js';
import * as vaultList from './commands/vault-list.js';
import * as diskBackup from './commands/disk-backup.js';
import * as diskExport from './commands/disk-export.js';
import * as diskRestore from './commands/disk-restore.js';
import * as diskServe from './commands/disk-serve.js';
import * as journalProcess from './commands/journal-process.js';
import * as pointList from './commands/point-list.js';
import * as processServerRun from './commands/process-server-run.js';
import * as quickstart from './commands/quickstart.js';
import * as recoveryCommands from './commands/recovery.js';
import * as planCommands from './commands/plans.js';
import * as reverseCommands from './commands/reverse.js';
import * as server from './commands/server.js';
import * as storeGc from './commands/store-gc.js';
import * as storeInit from './commands/store-init.js';
import * as storePrune from './commands/store-prune.js';
import * as storeVerify from './commands/store-verify.js';

export const VERSION = '0.1.0';

/** Builds the command tree. Every leaf command but the API, agent and process-server ones gets the store options. */
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
  quickstart.register(program, env, signals);
  server.register(program, env, signals);

  // The control plane: commands that talk to a vault server (src/cli/api-client.ts).
  login.register(program, env);
  logout.register(program, env);
  const vault = program.command('vault').description('vaults: create, list, check (seed steps 2 and 4)');
  vaultCreate.register(vault, env);
  vaultList.register(vault, env);
  vaultCheck.register(vault, env);
  registrationKeyCreate.register(program.command('registration-key').description('registration keys for configuration servers (seed step 3)'), env);
  const configServer = program.command('config-server').description('configuration servers: register, list, refresh');
  configServerRegister.register(configServer, env);
  configServerList.register(configServer, env);
  configServerRefresh.register(configServer, env);
  const policy = program.command('policy').description('replication policies (seed step 5)');
  policyCreate.register(policy, env);
  policyList.register(policy, env);
  policyShow.register(policy, env);
  const machine = program.command('machine').description('machines to protect: add, list, check');
  machineAdd.register(machine, env);
  machineList.register(machine, env);
  machineCheck.register(machine, env);
  accountAdd.register(program.command('account').description('push-install accounts'), env);
  const replication = program.command('replication').description('replication: enable (seed step 5), pause, resume, throttle');
  replicationEnable.register(replication, env);
  replicationPause.register(replication, env);
  replicationResume.register(replication, env);
  replicationThrottle.register(replication, env);
  const item = program.command('item').description('replicated items');
  itemList.register(item, env);
  itemShow.register(item, env);
  itemEnrollToken.register(item, env);
  const job = program.command('job').description('jobs: list, show, watch');
  jobList.register(job, env);
  jobShow.register(job, env);
  jobWatch.register(job, env, signals);
  alertList.register(program.command('alert').description('alerts'), env);
  const user = program.command('user').description('users of the vault: list, create, set-password (portal sign-in)');
  userList.register(user, env);
  userCreate.register(user, env);
  userSetPassword.register(user, env);
  // Recovery (docs/recovery.md): test failover, failover, commit, drills, plans, reprotect, failback.
  recoveryCommands.register(program, env, signals);
  planCommands.register(program, env, signals);
  reverseCommands.register(program, env, signals);
  const agent = program.command('agent').description('the mobility agent on a protected machine: enroll, run, status');
  agentEnroll.register(agent, env);
  agentRun.register(agent, env, signals);
  agentStatus.register(agent, env);
  processServerRun.register(program.command('process-server').description('a standalone process server: scales the built-in one out'), env, signals);

  const leaves = (c: Command): Command[] => (c.commands.length === 0 ? [c] : c.commands.flatMap(leaves));
  for (const leaf of leaves(program)) {
    leaf.exitOverride();
    leaf.configureOutput({ writeOut: (s) => env.stdout.write(s), writeErr: (s) => env.stderr.write(s), outputError: () => undefined });
    if (leaf.name() === 'quickstart' || isApiCommand(leaf)) continue;
    if (leaf.name() === 'server') {
      leaf.option('--json', 'print the URL and admin token as JSON');
      continue;
    }
    // The agent and the process server reach stores through the vault's grant, not a --store of their own.
    const parent = leaf.parent?.name();
    if (parent !== 'agent' && parent !== 'process-server') {
      leaf.addOption(new Option('--store <url>', 'store URL: file:///path, azblob://account/container, s3://bucket/prefix').env('LIFEBOAT_STORE'));
      leaf.option('--passphrase-file <file>', 'read the passphrase (or recovery key) from the first line of this file; else LIFEBOAT_PASSPHRASE');
    }
    const has = (flag: string): boolean => leaf.options.some((o) => o.long === flag);
    if (!has('--json')) leaf.option('--json', 'print the result as JSON for scripts');
    if (!has('--quiet')) leaf.option('-q, --quiet', 'no progress output');
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
