import type { Command } from 'commander';
import type { Machine } from '../../core/model.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { machineFields } from './machine-add.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'check <machine>', "check that a machine's distribution and kernel are supported, by id or name").action(async (ref: string, opts: ApiFlags) => {
    const client = connect(opts, env);
    const id = await resolveRef(client, '/api/v1/machines', 'machine', ref);
    const machine = await client.post<Machine>(`/api/v1/machines/${encodeURIComponent(id)}/check`);
    emit(opts, env, machine, machineFields(machine));
  });
}
