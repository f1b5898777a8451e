import { LifeboatError, asLifeboatError, isLifeboatError } from '../../core/errors.js';
import { transition } from '../../core/item-state.js';
import type { ChosenPoint, DrillReport, ItemState, ReplicatedItem } from '../../core/model.js';
import type { StepContext, StepHandler, StepHandlers } from '../jobs/runner.js';
import { redact } from '../secrets/redact.js';
import { storeDiskName } from '../services/agents.js';
import { shutDownSource } from '../reverse/source-control.js';
import { machineIdOf, networkName, networkOf, type MachineSources } from './machines.js';
import type { RecoveryDeps } from './module.js';
import type { JobParams, Operations } from './operations.js';
import { oldestCapture } from './points.js';
import { checkBoot } from './probes.js';

/** The console's tail a drill report keeps. */
export const CONSOLE_TAIL_BYTES = 64 * 1024;
/** "Fence the source": how long the failover waits for the old source's agent to hear of the new generation. */
const FENCE_WAIT_MS = 120_000;
/** An agent silent this long is offline: it ships nothing, so there is nothing to wait for. */
const AGENT_OFFLINE_MS = 30_000;
const POLL_MS = 500;

const NO_SETTINGS_NOTE = 'No drill settings: no boot marker and no probes, so "booted" means the machine started (lifeboat drill settings ITEM adds them).';

interface Step {
  readonly item: ReplicatedItem;
  readonly params: JobParams;
}

/**
 * The step handlers of test failover, its cleanup, failover, change of recovery
 * point and commit (src/core/jobs.ts names the steps). Every step can run again:
 * the resumable kinds rerun their current step after a vault restart, so each
 * finds what an earlier run of it made (a machine, a row, a state) and goes on.
 */
export function recoveryHandlers(deps: RecoveryDeps, ops: Operations, sources: MachineSources): StepHandlers {
  const { repos, compute } = deps;

  const load = async (ctx: StepContext, states: readonly ItemState[]): Promise<Step> => {
    if (ctx.job.itemId === null) throw new LifeboatError('INTERNAL', `job ${ctx.job.id} names no replicated item`);
    const item = await repos.items.get(ctx.job.itemId);
    if (!states.includes(item.state)) {
      throw new LifeboatError('ILLEGAL_TRANSITION', `item ${item.id} is '${item.state}', not ${states.map((s) => `'${s}'`).join(' or ')}`, {
        details: { state: item.state },
      });
    }
    return { item, params: await ops.params(ctx.job.id) };
  };

  const jobStartMs = (ctx: StepContext): number => Date.parse(ctx.job.startedAt ?? ctx.job.createdAt);

  const driverAvailable = async (): Promise<void> => {
    const probe = await compute.probe();
    if (!probe.available) {
      throw new LifeboatError('COMPUTE_UNAVAILABLE', `the ${compute.name} compute driver cannot run here: ${probe.reason ?? 'no reason given'}`);
    }
  };

  /** The chosen point, resolving the choice (processing first for `latest`) when the request did not. */
  const chosenPoint = async (ctx: StepContext, step: Step): Promise<ChosenPoint> => {
    if (step.params.chosen) return step.params.chosen;
    if (!step.params.point) throw new LifeboatError('NOT_FOUND', `the parameters of job ${ctx.job.id} are missing; start the operation again`);
    const chosen = await ops.choosePoint(step.item, step.params.point);
    await ops.setParams(ctx.job.id, { chosen });
    return chosen;
  };

  const requireChosen = (ctx: StepContext, step: Step): ChosenPoint => {
    if (!step.params.chosen) throw new LifeboatError('INTERNAL', `job ${ctx.job.id} reached '${ctx.job.steps[ctx.stepIndex]?.name}' without a chosen point`);
    return step.params.chosen;
  };

  /** Verifies the chosen points still exist (retention keeps them, an operator's prune might not). */
  const pointsExist = async (item: ReplicatedItem, point: ChosenPoint): Promise<void> => {
    const repo = await deps.stores.openVaultStore(item.vaultId);
    for (const d of point.disks) {
      const m = await repo.findPoint(d.pointId);
      if (m.disk !== d.disk) throw new LifeboatError('NOT_FOUND', `point ${d.pointId} is not a point of disk ${d.disk}`);
    }
  };

  /** Creates (or updates) the recovered machine's row, then the machine. */
  const createMachine = async (
    ctx: StepContext,
    item: ReplicatedItem,
    purpose: 'test' | 'failover',
    point: ChosenPoint,
    network: ReturnType<typeof networkOf>,
    extra: { forwardPorts?: readonly number[]; trackChanges?: boolean },
  ): Promise<void> => {
    const id = machineIdOf(purpose, item.id);
    const row = await repos.recoveredMachines.find(id);
    if (row) await repos.recoveredMachines.update(id, { point, jobId: ctx.job.id, state: 'creating' });
    else await repos.recoveredMachines.create({ id, itemId: item.id, purpose, driver: compute.name, point, network: networkName(network), state: 'creating', jobId: ctx.job.id });
    const status = await sources.ensureCreated({ id, item, point, network, ...extra }, ctx.signal);
    await repos.recoveredMachines.update(id, { state: status.state === 'running' ? 'running' : 'stopped' });
  };

  const startMachine = async (ctx: StepContext, id: string): Promise<void> => {
    if (!compute.capabilities.boots) return; // the export driver wrote the disks; nothing boots
    await compute.start(id, { signal: ctx.signal });
    await repos.recoveredMachines.update(id, { state: 'running' });
  };

  // ---- test failover -------------------------------------------------------

  const reportOf = async (ctx: StepContext, params: JobParams): Promise<DrillReport> => {
    if (params.reportId) return repos.drillReports.get(params.reportId);
    const found = await repos.drillReports.findByJob(ctx.job.id);
    if (!found) throw new LifeboatError('NOT_FOUND', `the drill report of job ${ctx.job.id} is missing`);
    return found;
  };

  /**
   * A step of an operation with a report (test failover, failover): when it fails, the
   * report is marked failed with the reason (a drill's cleanup keeps it). Not when the
   * vault is stopping: the step then runs again, or the restart fails the job.
   */
  const reported = (states: readonly ItemState[], handler: (ctx: StepContext, step: Step) => Promise<void>): StepHandler => {
    return async (ctx) => {
      let step: Step | undefined;
      try {
        step = await load(ctx, states);
        await handler(ctx, step);
      } catch (err) {
        if (ctx.signal.aborted && !isLifeboatError(err, 'DRILL_FAILED')) throw err;
        const report = await reportOf(ctx, step?.params ?? (await ops.params(ctx.job.id))).catch(() => undefined);
        if (report && report.outcome === 'running') {
          await repos.drillReports.update(report.id, { outcome: 'failed', error: redact(asLifeboatError(err).message), endedAt: deps.now().toISOString() });
        }
        throw err;
      }
    };
  };
  const drill = (handler: (ctx: StepContext, step: Step) => Promise<void>): StepHandler => reported(['test-failover'], handler);

  /** The chosen point and its RPO (job start − the oldest capture) into the report. */
  const reportPoint = async (ctx: StepContext, step: Step, point: ChosenPoint): Promise<void> => {
    const rpoSeconds = Math.max(0, Math.round((jobStartMs(ctx) - oldestCapture(point)) / 1000));
    await repos.drillReports.update((await reportOf(ctx, step.params)).id, { point, rpoSeconds });
  };

  const testFailover: Record<string, StepHandler> = {
    'Prerequisites check for test failover': drill(async (_ctx, { item, params }) => {
      await driverAvailable();
      if (params.chosen) await pointsExist(item, params.chosen);
    }),
    'Process data up to the recovery point': drill(async (ctx, step) => {
      await reportPoint(ctx, step, await chosenPoint(ctx, step));
    }),
    'Create the test virtual machine': drill(async (ctx, step) => {
      const point = requireChosen(ctx, step);
      const settings = await repos.drillSettings.find(step.item.id);
      const forwardPorts = [...new Set((settings?.probes ?? []).flatMap((p) => (p.kind === 'tcp' ? [p.port] : [])))];
      await createMachine(ctx, step.item, 'test', point, { kind: step.params.network ?? 'isolated' }, { forwardPorts });
    }),
    'Start the test virtual machine': drill(async (ctx, step) => {
      const id = machineIdOf('test', step.item.id);
      await startMachine(ctx, id);
      const status = await compute.status(id);
      await ops.setParams(ctx.job.id, { startedAtMs: Date.now() });
      await repos.drillReports.update((await reportOf(ctx, step.params)).id, { accel: status.accel });
    }),
    'Check the test virtual machine': drill(async (ctx, step) => {
      const id = machineIdOf('test', step.item.id);
      const report = await reportOf(ctx, step.params);
      const settings = await repos.drillSettings.find(step.item.id);
      const unset = !settings || (settings.bootMarker === null && settings.probes.length === 0);
      let check;
      if (!compute.capabilities.boots) {
        check = unset
          ? { ok: true, bootedAtMs: null, probes: [], error: null }
          : { ok: false, bootedAtMs: null, probes: [], error: `the ${compute.name} compute driver does not boot machines, so the boot marker and probes cannot run` };
      } else {
        // A failover of the item (a real disaster), a cleanup or a cancel interrupts the checks: they never hold one up.
        const watch = watchDrill(deps, step.item.id, ctx.job.id, ctx.signal);
        try {
          check = await checkBoot(compute, await compute.status(id), settings, step.params.startedAtMs ?? Date.now(), watch.signal);
        } finally {
          watch.stop();
        }
        if (watch.left()) check = { ...check, ok: false, error: `the drill was interrupted (${watch.left()}) before its checks ended` };
      }
      const rtoSeconds = check.bootedAtMs === null ? null : Math.max(0, Math.round((check.bootedAtMs - jobStartMs(ctx)) / 1000));
      await repos.drillReports.update(report.id, {
        outcome: check.ok ? 'passed' : 'failed',
        probes: check.probes,
        rtoSeconds,
        error: check.error === null ? null : redact(check.error),
        endedAt: deps.now().toISOString(),
        ...(unset ? { notes: compute.capabilities.boots ? NO_SETTINGS_NOTE : `The ${compute.name} compute driver wrote the disks; nothing boots.` } : {}),
      });
      if (!check.ok) throw new LifeboatError('DRILL_FAILED', check.error ?? 'the drill failed', { details: { reportId: report.id } });
    }),
  };

  // ---- cleanup -------------------------------------------------------------

  /** The cleanup's states: its own, or failing over (a failover from the drill queued it). */
  const CLEANUP_STATES: readonly ItemState[] = ['test-failover-cleanup', 'failing-over'];

  const cleanupReport = async (ctx: StepContext, step: Step): Promise<DrillReport | undefined> => {
    if (step.params.reportId) return repos.drillReports.find(step.params.reportId);
    return (await repos.drillReports.listByItem(step.item.id)).find((r) => r.cleanupJobId === ctx.job.id);
  };

  const cleanup: Record<string, StepHandler> = {
    'Prerequisites check': async (ctx) => {
      await load(ctx, CLEANUP_STATES);
    },
    'Shut down the test virtual machine': async (ctx) => {
      const step = await load(ctx, CLEANUP_STATES);
      const id = machineIdOf('test', step.item.id);
      if (!(await sources.find(id))) return;
      const report = await cleanupReport(ctx, step);
      if (report) await repos.drillReports.update(report.id, { consoleLog: await compute.console(id, CONSOLE_TAIL_BYTES) });
      await compute.stop(id, { graceful: false });
      if (await repos.recoveredMachines.find(id)) await repos.recoveredMachines.update(id, { state: 'stopped' });
    },
    'Delete the test virtual machine': async (ctx) => {
      const step = await load(ctx, CLEANUP_STATES);
      const id = machineIdOf('test', step.item.id);
      if (await repos.recoveredMachines.find(id)) await repos.recoveredMachines.update(id, { state: 'deleting' });
      await sources.remove(id, { graceful: false });
      if (await repos.recoveredMachines.find(id)) await repos.recoveredMachines.delete(id);
    },
    'Record the notes': async (ctx) => {
      // `protected` too: run again after a restart that came between the state change and the step's end.
      const step = await load(ctx, [...CLEANUP_STATES, 'protected']);
      const report = await cleanupReport(ctx, step);
      if (report) {
        const drillJob = await repos.jobs.find(report.jobId);
        const notes = [report.notes, step.params.notes].filter((n): n is string => typeof n === 'string' && n.length > 0);
        await repos.drillReports.update(report.id, {
          notes: notes.length > 0 ? [...new Set(notes)].join('\n') : null,
          // A drill that never reached its checks (failed, cancelled, cut by a restart) did not pass.
          ...(report.outcome === 'running'
            ? { outcome: 'failed' as const, error: report.error ?? drillJob?.error ?? `the test failover job ended '${drillJob?.state ?? 'unknown'}' before its checks` }
            : {}),
          endedAt: report.endedAt ?? deps.now().toISOString(),
        });
      }
      if (step.item.state === 'test-failover-cleanup') {
        const next = transition(step.item, 'finish-test-failover-cleanup');
        if (!(await repos.items.updateState(step.item.id, step.item.state, next.state))) {
          throw new LifeboatError('CONFLICT', `item ${step.item.id} changed state during the cleanup`);
        }
      }
    },
  };

  // ---- failover ------------------------------------------------------------

  const failing = (handler: (ctx: StepContext, step: Step) => Promise<void>): StepHandler => reported(['failing-over'], handler);

  const failover: Record<string, StepHandler> = {
    'Prerequisites check for failover': failing(async (_ctx, { item, params }) => {
      await driverAvailable();
      networkOf(item.compute.network);
      if (params.chosen) await pointsExist(item, params.chosen);
    }),
    'Shut down the source machine': async (ctx) => {
      const { item, params } = await load(ctx, ['failing-over']);
      if (!params.shutdownSource) {
        deps.logger.info({ itemId: item.id, jobId: ctx.job.id }, 'failover: shutting down the source was not asked for');
        return;
      }
      const how = await shutDownSource(deps, item, ctx.signal);
      deps.logger.info({ itemId: item.id, jobId: ctx.job.id, how }, 'failover: the source machine was shut down');
    },
    'Fence the source': async (ctx) => {
      const { item } = await load(ctx, ['failing-over']);
      // The transition raised the generation when the failover was asked for (the job's creation): from then
      // on the vault answers the old agent "fenced". Wait until it has heard that, or is silent anyway.
      const raisedAtMs = Date.parse(ctx.job.createdAt);
      const giveUpAt = deps.now().getTime() + FENCE_WAIT_MS;
      for (;;) {
        const agent = await repos.agents.findByItem(item.id);
        const last = agent?.lastHeartbeatAt ? Date.parse(agent.lastHeartbeatAt) : null;
        const nowMs = deps.now().getTime();
        if (!agent || last === null || last >= raisedAtMs || nowMs - last > AGENT_OFFLINE_MS) return;
        if (nowMs > giveUpAt) {
          deps.logger.warn({ itemId: item.id, agentId: agent.id }, 'failover: the source agent did not heartbeat in time; its stream is refused by generation all the same');
          return;
        }
        if (ctx.signal.aborted) throw new LifeboatError('JOB_FAILED', 'the vault stopped while the failover waited for the source to be fenced');
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    },
    'Process data up to the recovery point': failing(async (ctx, step) => {
      await reportPoint(ctx, step, await chosenPoint(ctx, step));
    }),
    'Create the replica virtual machine': failing(async (ctx, step) => {
      await createMachine(ctx, step.item, 'failover', requireChosen(ctx, step), networkOf(step.item.compute.network), { trackChanges: true });
    }),
    'Start the replica virtual machine': reported(['failing-over', 'failed-over'], async (ctx, { item, params }) => {
      const id = machineIdOf('failover', item.id);
      await startMachine(ctx, id);
      // The failover's RTO: job start → the replica machine started.
      const report = await reportOf(ctx, params);
      if (report.outcome === 'running') {
        await repos.drillReports.update(report.id, {
          outcome: 'passed',
          accel: (await compute.status(id)).accel,
          rtoSeconds: Math.max(0, Math.round((deps.now().getTime() - jobStartMs(ctx)) / 1000)),
          endedAt: deps.now().toISOString(),
        });
      }
      if (item.state === 'failing-over') {
        const next = transition(item, 'finish-failover');
        if (!(await repos.items.updateState(item.id, item.state, next.state))) throw new LifeboatError('CONFLICT', `item ${item.id} changed state during the failover`);
      }
    }),
  };

  // ---- change of recovery point --------------------------------------------

  const changePoint: Record<string, StepHandler> = {
    'Prerequisites check': async (ctx) => {
      const step = await load(ctx, ['failed-over']);
      await driverAvailable();
      await pointsExist(step.item, requireChosen(ctx, step));
    },
    'Shut down the replica virtual machine': async (ctx) => {
      const { item, params } = await load(ctx, ['failed-over']);
      const id = machineIdOf('failover', item.id);
      const row = await repos.recoveredMachines.find(id);
      // Run again after the new machine was made: it stays.
      if (row?.jobId === ctx.job.id && JSON.stringify(row.point) === JSON.stringify(params.chosen)) return;
      if (row) await repos.recoveredMachines.update(id, { state: 'deleting' });
      await sources.remove(id, { graceful: true });
      if (row) await repos.recoveredMachines.update(id, { state: 'stopped' });
    },
    'Create the replica virtual machine': async (ctx) => {
      const step = await load(ctx, ['failed-over']);
      await createMachine(ctx, step.item, 'failover', requireChosen(ctx, step), networkOf(step.item.compute.network), { trackChanges: true });
    },
    'Start the replica virtual machine': async (ctx) => {
      const { item } = await load(ctx, ['failed-over']);
      await startMachine(ctx, machineIdOf('failover', item.id));
    },
  };

  // ---- commit --------------------------------------------------------------

  const replicaRow = async (item: ReplicatedItem) => {
    const row = await repos.recoveredMachines.find(machineIdOf('failover', item.id));
    if (!row) throw new LifeboatError('NOT_FOUND', `item ${item.id} has no replica machine`, { details: { item: item.id } });
    return row;
  };

  const commit: Record<string, StepHandler> = {
    'Prerequisites check': async (ctx) => {
      const { item } = await load(ctx, ['committed']);
      await replicaRow(item);
    },
    'Commit the recovery point': async (ctx) => {
      const { item } = await load(ctx, ['committed']);
      const row = await replicaRow(item);
      // The other points go next: the replica must no longer read the store.
      await compute.waitIndependent(row.id, { signal: ctx.signal, onProgress: (p) => void ctx.progress(Math.max(0, Math.min(100, Math.floor(p)))).catch(() => undefined) });
      await sources.release(row.id);
    },
    'Delete the other recovery points': async (ctx) => {
      const { item } = await load(ctx, ['committed']);
      const row = await replicaRow(item);
      const keep = new Set(row.point.disks.map((d) => d.pointId));
      const repo = await deps.stores.openVaultStore(item.vaultId);
      for (const d of item.disks) {
        for (const p of await repo.listPoints(storeDiskName(item.id, d.name))) if (!keep.has(p.pointId)) await repo.deletePoint(p);
      }
    },
  };

  return {
    'test-failover': testFailover,
    'cleanup-test-failover': cleanup,
    failover,
    'change-recovery-point': changePoint,
    commit,
  };
}

/** Aborts when the item leaves `test-failover`, the job stops running, or `parent` aborts; `left()` says why. */
function watchDrill(deps: RecoveryDeps, itemId: string, jobId: string, parent: AbortSignal): { signal: AbortSignal; stop(): void; left(): string | null } {
  const controller = new AbortController();
  let became: string | null = null;
  const timer = setInterval(() => {
    Promise.all([deps.repos.items.get(itemId), deps.repos.jobs.get(jobId)])
      .then(([item, job]) => {
        if (item.state !== 'test-failover') became = `the item is now ${item.state}`;
        else if (job.state !== 'running') became = `the job was ${job.state}`;
        if (became !== null) controller.abort();
      })
      .catch(() => undefined);
  }, POLL_MS);
  return { signal: AbortSignal.any([parent, controller.signal]), stop: () => clearInterval(timer), left: () => became };
}
