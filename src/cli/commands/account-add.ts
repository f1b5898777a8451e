import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { LifeboatError } from '../../core/errors.js';
import type { PushAccount } from '../../core/model.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields } from '../table.js';

function readSecret(file: string, what: string, firstLine: boolean): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new LifeboatError('USAGE', `cannot read the ${what} file ${file}`, { cause: err });
  }
  const value = firstLine ? (text.split(/\r?\n/)[0] ?? '') : text;
  if (value.trim().length === 0) throw new LifeboatError('USAGE', `the ${what} file ${file} is empty`);
  return value;
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'add <name>', 'add a push-install account (Linux root over SSH); the secret is stored encrypted and never shown again')
    .requiredOption('--config-server <server>', 'the configuration server that uses it, by id or name')
    .requiredOption('--username <user>', 'the SSH user, usually root')
    .option('--password-file <file>', 'read the password from the first line of this file')
    .option('--key-file <file>', 'read the SSH private key (PEM or OpenSSH) from this file')
    .action(async (name: string, opts: ApiFlags & { configServer: string; username: string; passwordFile?: string; keyFile?: string }) => {
      if (!opts.passwordFile === !opts.keyFile) throw new LifeboatError('USAGE', 'give exactly one of --password-file FILE or --key-file FILE');
      const secret = opts.passwordFile
        ? { password: readSecret(opts.passwordFile, 'password', true) }
        : { privateKey: readSecret(opts.keyFile as string, 'private key', false) };
      const client = connect(opts, env);
      const configServerId = await resolveRef(client, '/api/v1/config-servers', 'configuration server', opts.configServer);
      const account = await client.post<PushAccount>('/api/v1/accounts', { configServerId, name, username: opts.username, ...secret });
      emit(
        opts,
        env,
        account,
        `added account ${account.name}\n${fields([
          ['id', account.id],
          ['username', account.username],
          ['kind', account.kind],
          ['configuration server', account.configServerId],
        ])}`,
      );
    });
}
