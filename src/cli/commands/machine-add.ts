import type { Command } from 'commander';
import type { Machine } from '../../core/model.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields } from '../table.js';

export function machineFields(m: Machine): string {
  return fields([
    ['id', m.id],
    ['name', m.name],
    ['configuration server', m.configServerId],
    ['IP', m.privateIp],
    ['OS', m.os],
    ['kernel', m.kernel],
    ['supported', m.supported === null ? 'not checked' : m.supported ? 'yes' : `no: ${m.supportReason ?? ''}`],
    ['created', m.createdAt],
  ]);
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'add <name>', 'add a machine to protect by name, private IP and OS (seed step 4)')
    .requiredOption('--config-server <server>', 'the configuration server that reaches it, by id or name')
    .requiredOption('--ip <ip>', 'its private IP address')
    .requiredOption('--os <os>', 'its distribution, e.g. debian-12, ubuntu-22.04, rhel-9')
    .option('--kernel <kernel>', 'its kernel release (uname -r)')
    .action(async (name: string, opts: ApiFlags & { configServer: string; ip: string; os: string; kernel?: string }) => {
      const client = connect(opts, env);
      const configServerId = await resolveRef(client, '/api/v1/config-servers', 'configuration server', opts.configServer);
      const machine = await client.post<Machine>('/api/v1/machines', {
        configServerId,
        name,
        privateIp: opts.ip,
        os: opts.os,
        ...(opts.kernel ? { kernel: opts.kernel } : {}),
      });
      emit(opts, env, machine, `added machine ${machine.name}\n${machineFields(machine)}`);
    });
}
