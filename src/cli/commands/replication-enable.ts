import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import type { Job, ReplicatedItem } from '../../core/model.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { table } from '../table.js';

interface EnableFlags extends ApiFlags {
  vault: string;
  policy: string;
  configServer: string;
  account?: string;
  manualInstall?: boolean;
  processServer?: string;
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'enable <machine...>', 'enable replication for machines (seed step 5): one replicated item and one "Enable protection" job each')
    .requiredOption('--vault <vault>', 'the vault, by id or name')
    .requiredOption('--policy <policy>', 'the replication policy, by id or name')
    .requiredOption('--config-server <server>', 'the configuration server, by id or name')
    .option('--account <account>', 'the push-install account, by id or name (push install over SSH)')
    .option('--manual-install', 'install the agent by hand instead: the job waits until it enrolls (lifeboat item enroll-token ITEM, then lifeboat agent enroll)')
    .option('--process-server <server>', 'the process server, by id or name (default: the configuration server\'s)')
    .action(async (machineRefs: string[], opts: EnableFlags) => {
      if (opts.manualInstall === (opts.account !== undefined)) throw new LifeboatError('USAGE', 'give exactly one of --account ACCOUNT (push install) or --manual-install');
      const client = connect(opts, env);
      const body = {
        vaultId: await resolveRef(client, '/api/v1/vaults', 'vault', opts.vault),
        policyId: await resolveRef(client, '/api/v1/policies', 'policy', opts.policy),
        configServerId: await resolveRef(client, '/api/v1/config-servers', 'configuration server', opts.configServer),
        ...(opts.account === undefined ? { install: 'manual' } : { accountId: await resolveRef(client, '/api/v1/accounts', 'account', opts.account) }),
        ...(opts.processServer ? { processServerId: await resolveRef(client, '/api/v1/process-servers', 'process server', opts.processServer) } : {}),
        machines: await Promise.all(machineRefs.map((m) => resolveRef(client, '/api/v1/machines', 'machine', m))),
      };
      const answer = await client.post<{ items: ReplicatedItem[]; jobs: Job[] }>('/api/v1/replication/enable', body);
      const jobOf = new Map(answer.jobs.map((j) => [j.itemId, j]));
      emit(
        opts,
        env,
        answer,
        [
          table(['item', 'machine', 'state', 'job', 'job state'], answer.items.map((i) => [i.id, i.machineId, i.state, jobOf.get(i.id)?.id, jobOf.get(i.id)?.state])),
          ...answer.jobs.map((j) => `follow it: lifeboat job watch ${j.id}`),
        ].join('\n'),
      );
    });
}
