import type { Command } from 'commander';
import type { Vault } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list vaults').action(async (opts: ApiFlags) => {
    const vaults = await connect(opts, env).all<Vault>('/api/v1/vaults');
    emit(
      opts,
      env,
      vaults,
      table(['id', 'name', 'location', 'store', 'recovery network', 'created'], vaults.map((v) => [v.id, v.name, v.location, v.storeUrl, v.recoveryNetwork, v.createdAt]), 'no vaults'),
    );
  });
}
