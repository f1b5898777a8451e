import type { Command } from 'commander';
import type { DrillSettings, Job, PointChoice, RecoveryPlan } from '../../core/model.js';
import { LifeboatError } from '../../core/errors.js';
import { connect, resolveRef, type ApiClient } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields, table } from '../table.js';
import { POINT_HELP, followJob, jobFailed, parsePoint } from './recovery-common.js';
import { planPath, planText, resolvePlan, waitingManualAction } from './plan-common.js';

interface RunFlags extends ApiFlags {
  point?: string;
  notes?: string;
  shutdownSource?: boolean;
  wait: boolean;
}

/** The API's point body (src/vault/http/routes/plans.ts). */
function pointBody(choice: PointChoice): Record<string, string> {
  return { ...choice };
}

/** Posts the operation; unless --no-wait, follows the job until it ends or waits on a manual action. */
async function operate(client: ApiClient, path: string, body: unknown, opts: RunFlags, env: Env, signals: AbortSignal): Promise<void> {
  const job = await client.post<Job>(path, body);
  if (!opts.wait) {
    emit(opts, env, job, `job ${job.id} (${job.kind}) queued; follow it with lifeboat job watch ${job.id}`);
    return;
  }
  const seen = await followJob(client, job.id, opts, env, signals, { untilManualAction: true });
  if (opts.json) emit(opts, env, seen, '');
  if (waitingManualAction(seen)) return;
  if (seen.state !== 'succeeded') throw jobFailed(seen, opts.json === true);
  if (!opts.json) env.stdout.write(`job ${seen.id} succeeded\n`);
}

export function register(parent: Command, env: Env, signals: AbortSignal): void {
  apiCommand(parent, 'list', 'list recovery plans')
    .option('--vault <vault>', 'only the plans of this vault (id or name)')
    .action(async (opts: ApiFlags & { vault?: string }) => {
      const client = connect(opts, env);
      const vaultId = opts.vault === undefined ? undefined : await resolveRef(client, '/api/v1/vaults', 'vault', opts.vault);
      const plans = await client.all<RecoveryPlan>(`/api/v1/plans${vaultId ? `?vaultId=${encodeURIComponent(vaultId)}` : ''}`);
      emit(
        opts,
        env,
        plans,
        table(['id', 'name', 'vault', 'groups', 'items'], plans.map((p) => [p.id, p.name, p.vaultId, p.groups.map((g) => g.name).join(' → '), p.groups.reduce((n, g) => n + g.itemIds.length, 0)])),
      );
    });
  apiCommand(parent, 'show <plan>', 'show a recovery plan (by id or name): its groups, items, scripts and manual actions').action(async (ref: string, opts: ApiFlags) => {
    const client = connect(opts, env);
    const plan = await client.get<RecoveryPlan>(planPath(await resolvePlan(client, ref)));
    emit(opts, env, plan, planText(plan));
  });
  apiCommand(parent, 'delete <plan>', 'delete a recovery plan (refused while one of its jobs runs)').action(async (ref: string, opts: ApiFlags) => {
    const client = connect(opts, env);
    const id = await resolvePlan(client, ref);
    await client.request('DELETE', planPath(id));
    emit(opts, env, { id, deleted: true }, `deleted recovery plan ${ref}`);
  });
  apiCommand(parent, 'test-failover <plan>', 'test failover of a whole plan in the isolated network: one job, group after group; stops following at a manual action and says how to acknowledge it')
    .option('--point <point>', POINT_HELP, 'latest-processed')
    .option('--no-wait', 'only queue the job and print it')
    .action(async (ref: string, opts: RunFlags) => {
      const client = connect(opts, env);
      const id = await resolvePlan(client, ref);
      await operate(client, planPath(id, '/test-failover'), { point: pointBody(parsePoint(opts.point ?? 'latest-processed')) }, opts, env, signals);
    });
  apiCommand(parent, 'cleanup <plan>', "clean up a plan's test failover: one job that cleans up its items group by group")
    .option('--notes <text>', "what the drill showed, kept in the items' reports")
    .option('--no-wait', 'only queue the job and print it')
    .action(async (ref: string, opts: RunFlags) => {
      const client = connect(opts, env);
      const id = await resolvePlan(client, ref);
      await operate(client, planPath(id, '/test-failover/cleanup'), { notes: opts.notes ?? null }, opts, env, signals);
    });
  apiCommand(parent, 'failover <plan>', 'fail a whole plan over: one job, group after group (the items of a group in parallel)')
    .option('--point <point>', POINT_HELP, 'latest-processed')
    .option('--shutdown-source', 'shut the source machines down first; a failure there is recorded and the failover goes on')
    .option('--no-wait', 'only queue the job and print it')
    .action(async (ref: string, opts: RunFlags) => {
      const client = connect(opts, env);
      const id = await resolvePlan(client, ref);
      const body = { point: pointBody(parsePoint(opts.point ?? 'latest-processed')), shutdownSource: opts.shutdownSource === true };
      await operate(client, planPath(id, '/failover'), body, opts, env, signals);
    });
  apiCommand(parent, 'drill-schedule <plan>', "run the plan's drill (test failover, then cleanup) unattended every N hours; 0 for none")
    .requiredOption('--every-hours <n>', 'hours between scheduled drills (0: none)')
    .action(async (ref: string, opts: ApiFlags & { everyHours: string }) => {
      const hours = Number(opts.everyHours);
      if (!Number.isInteger(hours) || hours < 0) throw new LifeboatError('USAGE', `--every-hours must be a whole number of hours, not ${opts.everyHours}`);
      const client = connect(opts, env);
      const id = await resolvePlan(client, ref);
      const settings = await client.request<DrillSettings>('PUT', planPath(id, '/drill-settings'), { scheduleEveryHours: hours === 0 ? null : hours });
      emit(
        opts,
        env,
        settings,
        fields([
          ['plan', id],
          ['every', settings.scheduleEveryHours === null ? 'no schedule' : `${settings.scheduleEveryHours} h`],
          ['next drill', settings.nextRunAt],
          ['last drill', settings.lastRunAt],
        ]),
      );
    });
}
