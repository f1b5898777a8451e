import type { Command } from 'commander';
import type { ReplicationPolicy } from '../../core/model.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { policyFields } from './policy-create.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'show <policy>', 'show a replication policy, by id or name').action(async (ref: string, opts: ApiFlags) => {
    const client = connect(opts, env);
    const id = await resolveRef(client, '/api/v1/policies', 'policy', ref);
    const policy = await client.get<ReplicationPolicy>(`/api/v1/policies/${encodeURIComponent(id)}`);
    emit(opts, env, policy, policyFields(policy));
  });
}
