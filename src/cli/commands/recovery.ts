import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import type { DrillReport, DrillSettings, Job, Probe, ReplicatedItem } from '../../core/model.js';
import { connect, type ApiClient } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields, table } from '../table.js';
import { POINT_HELP, followJob, itemPath, jobFailed, parsePoint, reportOfJob, reportText } from './recovery-common.js';

interface WaitFlags extends ApiFlags {
  /** commander's --no-wait */
  wait: boolean;
}

/** The CLI's test failover, failover, change point, commit, drill settings and reports (docs/recovery.md). */
export function register(program: Command, env: Env, signals: AbortSignal): void {
  const testFailover = program.command('test-failover').description('drills: boot a recovery point in the isolated network, check it, clean up');
  const failover = program.command('failover').description('failover: the replica machine takes over; change of recovery point; commit');
  const drill = program.command('drill').description('drill reports and drill settings (probes, boot marker, schedule)');

  /** Posts the action; unless --no-wait, follows the job and answers it ended (JOB_FAILED when it did not succeed). */
  const run = async (client: ApiClient, opts: WaitFlags, path: string, body: unknown, done: (job: Job) => Promise<string>): Promise<Job> => {
    const job = await client.post<Job>(path, body);
    if (!opts.wait) {
      emit(opts, env, job, `job ${job.id} (${job.kind}) queued; follow it with lifeboat job watch ${job.id}`);
      return job;
    }
    if (!opts.json) env.stdout.write(`job ${job.id} (${job.kind})\n`);
    const ended = await followJob(client, job.id, opts, env, signals);
    if (ended.state !== 'succeeded') {
      if (opts.json) emit(opts, env, ended, '');
      throw jobFailed(ended, opts.json === true);
    }
    emit(opts, env, ended, await done(ended));
    return ended;
  };

  apiCommand(testFailover, 'start <item>', 'start a test failover of a protected item; follows the job and prints the drill report (exit code of DRILL_FAILED when a check failed)')
    .option('--point <point>', POINT_HELP, 'latest-processed')
    .option('--no-wait', 'only queue the job and print it')
    .action(async (item: string, opts: WaitFlags & { point: string }) => {
      const client = connect(opts, env);
      const job = await client.post<Job>(itemPath(item, '/test-failover'), { point: parsePoint(opts.point) });
      if (!opts.wait) {
        emit(opts, env, job, `test failover job ${job.id} queued; follow it with lifeboat job watch ${job.id}, then lifeboat drill report ${item}`);
        return;
      }
      if (!opts.json) env.stdout.write(`test failover job ${job.id}\n`);
      const ended = await followJob(client, job.id, opts, env, signals);
      const report = await reportOfJob(client, item, job.id);
      // --json: the ended job, with its drill report.
      emit(opts, env, { ...ended, report: report ?? null }, report ? reportText(report) : `job ${ended.id} ${ended.state}; no drill report`);
      if (ended.state === 'succeeded') return;
      if (report?.outcome === 'failed' && ended.steps.some((s) => s.name === 'Check the test virtual machine' && s.state === 'failed')) {
        throw new LifeboatError(
          'DRILL_FAILED',
          `the drill of item ${item} failed: ${report.error ?? ended.error ?? 'see the report'}; clean it up with lifeboat test-failover cleanup ${item} --notes TEXT`,
          { details: { reported: opts.json === true, jobId: ended.id, reportId: report.id } },
        );
      }
      throw jobFailed(ended, opts.json === true);
    });

  apiCommand(testFailover, 'cleanup <item>', 'clean up a test failover: stop and delete the test machine; the report keeps its console tail and the notes')
    .option('--notes <text>', 'what the drill showed, kept in its report')
    .option('--no-wait', 'only queue the job and print it')
    .action(async (item: string, opts: WaitFlags & { notes?: string }) => {
      const client = connect(opts, env);
      await run(client, opts, itemPath(item, '/test-failover/cleanup'), opts.notes === undefined ? {} : { notes: opts.notes }, async () => {
        const [report] = (await client.get<{ items: DrillReport[] }>(itemPath(item, '/drill-reports'))).items;
        return `test failover of item ${item} cleaned up${report ? `; report ${report.id} (${report.outcome}): lifeboat drill report ${item}` : ''}`;
      });
    });

  const machineLine = async (client: ApiClient, item: string): Promise<string> => {
    const i = await client.get<ReplicatedItem>(itemPath(item));
    const { items } = await client.get<{ items: { id: string; driver: string; network: string; state: string; point: { disks: { disk: string; pointId: string; capturedAt: string }[] } }[] }>(
      itemPath(item, '/recovered-machines'),
    );
    const replica = items.find((m) => m.id.startsWith('failover-'));
    return [
      `item ${i.id}: ${i.state} (generation ${i.generation})`,
      replica
        ? `replica machine ${replica.id} (${replica.driver}, network ${replica.network}): ${replica.state}\n${table(['disk', 'point', 'captured'], replica.point.disks.map((d) => [d.disk, d.pointId, d.capturedAt]))}`
        : 'no replica machine',
    ].join('\n');
  };

  apiCommand(failover, 'start <item>', 'fail an item over: fence the source, create and start the replica machine at the point (never cancelled half-way)')
    .requiredOption('--point <point>', POINT_HELP)
    .option('--shutdown-source', 'shut the source machine down first (its agent, else SSH); a failure there is recorded and the failover goes on')
    .option('--no-wait', 'only queue the job and print it')
    .action(async (item: string, opts: WaitFlags & { point: string; shutdownSource?: boolean }) => {
      const client = connect(opts, env);
      await run(client, opts, itemPath(item, '/failover'), { point: parsePoint(opts.point), shutdownSource: opts.shutdownSource === true }, () => machineLine(client, item));
    });

  apiCommand(failover, 'change-point <item>', 'recreate the replica machine of a failed-over item at another recovery point (before commit)')
    .requiredOption('--point <point>', POINT_HELP)
    .option('--no-wait', 'only queue the job and print it')
    .action(async (item: string, opts: WaitFlags & { point: string }) => {
      const client = connect(opts, env);
      await run(client, opts, itemPath(item, '/change-point'), { point: parsePoint(opts.point) }, () => machineLine(client, item));
    });

  apiCommand(failover, 'commit <item>', "commit a failover: once the replica no longer reads the store, delete the item's other recovery points")
    .option('--no-wait', 'only queue the job and print it')
    .action(async (item: string, opts: WaitFlags) => {
      const client = connect(opts, env);
      await run(client, opts, itemPath(item, '/commit'), {}, () => machineLine(client, item));
    });

  apiCommand(drill, 'report <item>', "show an item's drill report (the newest, or --report ID): point per disk, RPO, RTO, driver, probes, outcome, notes, console tail")
    .option('--report <id>', 'a report id of the item (default: its newest report)')
    .action(async (item: string, opts: ApiFlags & { report?: string }) => {
      const client = connect(opts, env);
      let report: DrillReport | undefined;
      if (opts.report) {
        report = await client.get<DrillReport>(`/api/v1/drill-reports/${encodeURIComponent(opts.report)}`);
        if (report.itemId !== item) throw new LifeboatError('NOT_FOUND', `drill report ${opts.report} is not a report of item ${item}`);
      } else {
        [report] = (await client.get<{ items: DrillReport[] }>(itemPath(item, '/drill-reports'))).items;
      }
      if (!report) throw new LifeboatError('NOT_FOUND', `item ${item} has no drill report yet; run one with lifeboat test-failover start ${item}`);
      emit(opts, env, report, reportText(report));
    });

  apiCommand(drill, 'settings <item>', "show, or with options replace parts of, an item's drill settings")
    .option('--probe <probe>', "a check, repeatable (replaces the list): tcp:PORT, or 'cmd:COMMAND[=>EXPECTED]'", (v: string, all: string[] = []) => [...all, v])
    .option('--probe-timeout <seconds>', 'how long each given probe may take to pass', '60')
    .option('--boot-marker <regex>', "a console line matching this means booted ('' for none)")
    .option('--boot-timeout <seconds>', 'how long to wait for the boot marker')
    .option('--every-hours <n>', 'run the drill unattended every N hours (0 for no schedule)')
    .action(async (item: string, opts: ApiFlags & { probe?: string[]; probeTimeout: string; bootMarker?: string; bootTimeout?: string; everyHours?: string }) => {
      const client = connect(opts, env);
      let settings = await client.get<DrillSettings>(itemPath(item, '/drill-settings'));
      const changing = opts.probe !== undefined || opts.bootMarker !== undefined || opts.bootTimeout !== undefined || opts.everyHours !== undefined;
      if (changing) {
        const timeoutSeconds = count(opts.probeTimeout, '--probe-timeout', 1);
        const every = opts.everyHours === undefined ? settings.scheduleEveryHours : count(opts.everyHours, '--every-hours', 0) || null;
        settings = await client.request<DrillSettings>('PUT', itemPath(item, '/drill-settings'), {
          probes: opts.probe === undefined ? settings.probes : opts.probe.map((p, i) => parseProbe(p, i, timeoutSeconds)),
          bootMarker: opts.bootMarker === undefined ? settings.bootMarker : opts.bootMarker === '' ? null : opts.bootMarker,
          bootTimeoutSeconds: opts.bootTimeout === undefined ? settings.bootTimeoutSeconds : count(opts.bootTimeout, '--boot-timeout', 1),
          scheduleEveryHours: every,
        });
      }
      emit(
        opts,
        env,
        settings,
        [
          fields([
            ['item', settings.id],
            ['boot marker', settings.bootMarker === null ? null : `/${settings.bootMarker}/`],
            ['boot timeout', `${settings.bootTimeoutSeconds} s`],
            ['schedule', settings.scheduleEveryHours === null ? 'none' : `every ${settings.scheduleEveryHours} h`],
            ['next drill', settings.nextRunAt],
            ['last drill', settings.lastRunAt],
          ]),
          'probes:',
          table(
            ['name', 'kind', 'check', 'timeout'],
            settings.probes.map((p) => [p.name, p.kind, p.kind === 'tcp' ? `port ${p.port}` : `${p.command}${p.expectOutput ? ` => ${p.expectOutput}` : ''}`, `${p.timeoutSeconds} s`]),
            '  none',
          ),
        ].join('\n'),
      );
    });
}

function count(text: string, flag: string, min: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min) throw new LifeboatError('USAGE', `${flag} must be a whole number of at least ${min}`);
  return n;
}

function parseProbe(text: string, index: number, timeoutSeconds: number): Probe {
  const tcp = /^tcp:(\d{1,5})$/.exec(text);
  if (tcp) {
    const port = Number(tcp[1]);
    if (port < 1 || port > 65535) throw new LifeboatError('USAGE', `--probe ${text}: the port must be 1-65535`);
    return { name: `tcp-${port}`, kind: 'tcp', port, timeoutSeconds };
  }
  if (text.startsWith('cmd:') && text.length > 4) {
    const body = text.slice(4);
    const arrow = body.lastIndexOf('=>');
    const command = (arrow < 0 ? body : body.slice(0, arrow)).trim();
    const expected = arrow < 0 ? undefined : body.slice(arrow + 2).trim();
    if (command === '') throw new LifeboatError('USAGE', `--probe ${text}: the command is empty`);
    return { name: `cmd-${index + 1}`, kind: 'command', command, timeoutSeconds, ...(expected ? { expectOutput: expected } : {}) };
  }
  throw new LifeboatError('USAGE', `--probe ${JSON.stringify(text)} must be tcp:PORT or 'cmd:COMMAND[=>EXPECTED]'`);
}
