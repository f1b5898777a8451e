import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { LifeboatError } from '../../core/errors.js';
import type { User } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';

/** The first line of `file`, or of standard input when no file is given (a password never goes on the command line). */
function readPassword(file: string | undefined): string {
  let text: string;
  try {
    text = readFileSync(file ?? 0, 'utf8');
  } catch (err) {
    throw new LifeboatError('USAGE', file ? `cannot read password file ${file}` : 'cannot read the password from standard input', { cause: err });
  }
  const line = text.split(/\r?\n/)[0] ?? '';
  if (line.length === 0) throw new LifeboatError('USAGE', file ? `password file ${file} is empty` : 'no password on standard input');
  return line;
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'set-password <name>', "set a user's password for signing in to the portal (12 to 256 characters; needs the manage-users permission)")
    .option('--password-file <file>', 'read the password from the first line of this file (else from the first line of standard input)')
    .action(async (name: string, opts: ApiFlags & { passwordFile?: string }) => {
      const password = readPassword(opts.passwordFile);
      const client = connect(opts, env);
      const user = (await client.all<User>('/api/v1/users')).find((u) => u.name === name);
      if (!user) throw new LifeboatError('NOT_FOUND', `no user named ${name}`, { details: { name } });
      await client.request<void>('PUT', `/api/v1/users/${encodeURIComponent(user.id)}/password`, { password });
      emit(opts, env, { id: user.id, name: user.name, passwordSet: true }, `set the password of ${user.name}; sign in to the portal with it`);
    });
}
