import type { Command } from 'commander';
import type { Machine } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list machines, added or discovered').action(async (opts: ApiFlags) => {
    const machines = await connect(opts, env).all<Machine>('/api/v1/machines');
    emit(
      opts,
      env,
      machines,
      table(
        ['id', 'name', 'ip', 'os', 'kernel', 'supported', 'configuration server'],
        machines.map((m) => [m.id, m.name, m.privateIp, m.os, m.kernel, m.supported === null ? '?' : m.supported ? 'yes' : 'no', m.configServerId]),
        'no machines',
      ),
    );
  });
}
