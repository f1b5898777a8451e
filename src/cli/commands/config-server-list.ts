import type { Command } from 'commander';
import type { ConfigServer } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list configuration servers with their health and last heartbeat').action(async (opts: ApiFlags) => {
    const servers = await connect(opts, env).all<ConfigServer>('/api/v1/config-servers');
    emit(
      opts,
      env,
      servers,
      table(
        ['id', 'name', 'vault', 'address', 'version', 'health', 'heartbeat', 'refreshed'],
        servers.map((s) => [s.id, s.name, s.vaultId, s.address, s.version, s.health, s.lastHeartbeatAt, s.lastRefreshAt]),
        'no configuration servers',
      ),
    );
  });
}
