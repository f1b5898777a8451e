import type { Command } from 'commander';
import type { User } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list users and their roles').action(async (opts: ApiFlags) => {
    const users = await connect(opts, env).all<User>('/api/v1/users');
    emit(
      opts,
      env,
      users,
      table(['id', 'name', 'role', 'disabled', 'created'], users.map((u) => [u.id, u.name, u.role, u.disabled ? 'yes' : 'no', u.createdAt]), 'no users'),
    );
  });
}
