import type { Command } from 'commander';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { describe } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'refresh <server>', 're-run discovery on a configuration server now, by id or name').action(async (ref: string, opts: ApiFlags) => {
    const client = connect(opts, env);
    const id = await resolveRef(client, '/api/v1/config-servers', 'configuration server', ref);
    const answer = await client.post<Record<string, unknown>>(`/api/v1/config-servers/${encodeURIComponent(id)}/refresh`);
    emit(opts, env, answer, `refreshing configuration server ${id}\n${describe(answer)}`);
  });
}
