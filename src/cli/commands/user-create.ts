import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import { ROLES, type Role, type User } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'create <name>', 'create a user with a role (owner, contributor, operator, reader); set its password with lifeboat user set-password')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .action(async (name: string, opts: ApiFlags & { role: string }) => {
      if (!(ROLES as readonly string[]).includes(opts.role)) throw new LifeboatError('USAGE', `--role must be one of ${ROLES.join(', ')}`);
      const user = await connect(opts, env).post<User>('/api/v1/users', { name, role: opts.role as Role });
      emit(
        opts,
        env,
        user,
        [
          `created user ${user.name}`,
          fields([
            ['id', user.id],
            ['name', user.name],
            ['role', user.role],
            ['created', user.createdAt],
          ]),
        ].join('\n'),
      );
    });
}
