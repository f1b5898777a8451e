import { sleep } from '../../core/sleep.js';
import { redact } from '../secrets/redact.js';
import { LifeboatError, asLifeboatError } from '../../core/errors.js';
import { transition } from '../../core/item-state.js';
import { JOB_KINDS, completeStep, currentStepIndex, failStep, resumeAfterRestart, setStepProgress, startJob } from '../../core/jobs.js';
import type { Job, JobKind, Machine, PushAccount, ReplicatedItem } from '../../core/model.js';
import { checkOsSupport } from '../../core/os-support.js';
import type { Repositories } from '../db/repositories/index.js';
import { enableParamsKey, type EnableParams } from '../services/replication-services.js';
import { persistJob } from './job-store.js';
import { noPassphrase, storePassphraseKey } from '../services/vault-stores.js';

/**
 * The vault's job runner: picks queued jobs oldest first, runs their steps one
 * at a time through step handlers, and stores every step's start, progress and
 * end before going on (src/core/jobs.ts computes each next state), so a restart
 * finds the truth. On start it applies `resumeAfterRestart` to every job left
 * 'running': resumable kinds run their current step again, the others fail with
 * the reason stated; none vanishes and none stays running with nobody running it.
 *
 * A step handler resolves when its step succeeded and throws when it failed (the
 * error's message becomes the step's error). A step without a handler fails
 * with a message saying so: a job is never marked done for work nobody did.
 */

export interface StepContext {
  readonly job: Job;
  readonly stepIndex: number;
  readonly repos: Repositories;
  readonly now: () => Date;
  /** Aborted when the vault stops; the job is then left running and resolved at the next start. */
  readonly signal: AbortSignal;
  /** Reports the step's progress 0..100 (lower values than stored are ignored). */
  progress(percent: number): Promise<void>;
}

export type StepHandler = (ctx: StepContext) => Promise<void>;

/**
 * Handlers by job kind and step name (the names of src/core/jobs.ts). Kinds whose
 * steps are built per job (DYNAMIC_STEP_KINDS: recovery plans) give one handler
 * under '*', which reads the step's name and index from its context.
 */
export type StepHandlers = Partial<Record<JobKind, Readonly<Record<string, StepHandler>>>>;

/** What installs the mobility agent on a machine: the SSH push install (src/vault/push-install) plugs in here. */
export interface MobilityInstaller {
  /** `progress` reports the step's progress 0..100 (the job's "Install the mobility service" step). */
  install(target: {
    item: ReplicatedItem;
    machine: Machine;
    account: PushAccount;
    signal: AbortSignal;
    progress?: (percent: number) => Promise<void>;
  }): Promise<void>;
}

/**
 * The installer used until push install is wired to the runner. It does not
 * pretend: the step fails with a message that says push install is pending, so
 * the job, its alert and the item's state tell the truth.
 */
export const PENDING_PUSH_INSTALL: MobilityInstaller = {
  async install({ machine, account }) {
    throw new LifeboatError(
      'PUSH_INSTALL_FAILED',
      `push install is pending: this vault does not yet run push install from jobs; install the mobility agent on ${machine.name} (${machine.privateIp}) as ${account.username}, then enable replication again`,
    );
  },
};

async function enableContext(ctx: StepContext): Promise<{ item: ReplicatedItem; machine: Machine; account: PushAccount | null; params: EnableParams }> {
  if (ctx.job.itemId === null) throw new LifeboatError('INTERNAL', `job ${ctx.job.id} names no replicated item`);
  const item = await ctx.repos.items.get(ctx.job.itemId);
  const machine = await ctx.repos.machines.get(item.machineId);
  const params = await ctx.repos.settings.get<EnableParams>(enableParamsKey(item.id));
  if (!params) throw new LifeboatError('NOT_FOUND', `the enable parameters of item ${item.id} are missing; enable replication again`);
  const account = params.accountId === null ? null : await ctx.repos.pushAccounts.get(params.accountId);
  return { item, machine, account, params };
}

/** How often a manual install looks whether the agent enrolled, and how long it waits (an enrollment token lives 24 h). */
const MANUAL_INSTALL_POLL_MS = 1000;
const MANUAL_INSTALL_WAIT_MS = 24 * 3600 * 1000;

/**
 * A manual install: the operator installs the agent and enrolls it with a token from
 * `lifeboat item enroll-token`; the step succeeds when the item's agent has enrolled.
 */
async function waitForEnrollment(ctx: StepContext, item: ReplicatedItem, machine: Machine): Promise<void> {
  const deadline = ctx.now().getTime() + MANUAL_INSTALL_WAIT_MS;
  while (!(await ctx.repos.agents.findByItem(item.id))) {
    if (ctx.signal.aborted) throw new LifeboatError('JOB_FAILED', 'the vault stopped while waiting for the agent to enroll');
    if (ctx.now().getTime() > deadline) {
      throw new LifeboatError('ENROLLMENT_INVALID', `no agent enrolled for ${machine.name} within 24 hours; create a token with lifeboat item enroll-token ${item.id} and run lifeboat agent enroll on the machine`);
    }
    await sleep(MANUAL_INSTALL_POLL_MS, ctx.signal);
  }
}

/** The "Enable protection" steps (seed step 5). */
export function enableProtectionHandlers(installer: MobilityInstaller): Readonly<Record<string, StepHandler>> {
  return {
    'Prerequisites check': async (ctx) => {
      const { item, machine } = await enableContext(ctx);
      const check = checkOsSupport(machine);
      if (check.supported === false) throw new LifeboatError('VALIDATION', `machine ${machine.name} is not supported: ${check.reason ?? ''}`);
      await ctx.repos.policies.get(item.policyId);
      await ctx.repos.vaults.get(item.vaultId);
      if (item.state !== 'enabling') throw new LifeboatError('ILLEGAL_TRANSITION', `the item is '${item.state}', not 'enabling'`);
    },
    'Identify the target': async (ctx) => {
      const { item } = await enableContext(ctx);
      const vault = await ctx.repos.vaults.get(item.vaultId);
      if (!vault.storeUrl) throw new LifeboatError('CONFIG_INVALID', `vault ${vault.name} has no target store`);
      // Replication writes the vault's store: without its passphrase nothing could be stored.
      if (typeof (await ctx.repos.settings.get(storePassphraseKey(vault.id))) !== 'string') throw noPassphrase(vault.name);
    },
    'Install the mobility service': async (ctx) => {
      const { item, machine, account } = await enableContext(ctx);
      if (account === null) return waitForEnrollment(ctx, item, machine);
      await installer.install({ item, machine, account, signal: ctx.signal, progress: (percent) => ctx.progress(percent) });
    },
    // Replication itself is started by the agent once installed; the vault records the item as ready for it.
    'Enable replication': async (ctx) => {
      await enableContext(ctx);
    },
    'Start initial replication': async (ctx) => {
      const { item } = await enableContext(ctx);
      const next = transition(item, 'start-initial-replication');
      if (!(await ctx.repos.items.updateState(item.id, item.state, next.state, { initialReplicationPercent: next.initialReplicationPercent }))) {
        throw new LifeboatError('CONFLICT', `item ${item.id} changed state while initial replication was starting`);
      }
    },
  };
}

export function defaultStepHandlers(installer: MobilityInstaller = PENDING_PUSH_INSTALL): StepHandlers {
  return { 'enable-protection': enableProtectionHandlers(installer) };
}

export interface JobRunnerOptions {
  readonly repos: Repositories;
  readonly now: () => Date;
  readonly handlers?: StepHandlers;
  /** How often the queue is looked at; default 200 ms. */
  readonly pollIntervalMs?: number;
  /** Called with errors the runner cannot attach to a job (database gone); default: ignored after stop, rethrown never. */
  readonly onError?: (err: unknown) => void;
}

/** Jobs running at once, over all lanes (each lane runs one job at a time). */
const MAX_RUNNING_JOBS = 16;

/**
 * A job's lane: the jobs of one item run one after the other, oldest first (a
 * failover queued behind its drill's cleanup waits for it); jobs of different items,
 * and jobs of no item (recovery plans, which wait for their items' jobs), run side
 * by side, so a drill waiting for its machine to boot holds up no other item.
 */
function laneOf(job: Job): string {
  return job.itemId === null ? `job:${job.id}` : `item:${job.itemId}`;
}

export class JobRunner {
  private readonly handlers: StepHandlers;
  private readonly pollIntervalMs: number;
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private current: Promise<void> = Promise.resolve();
  /** Lane → the job running in it. */
  private readonly running = new Map<string, Promise<void>>();
  private stopped = false;

  constructor(private readonly options: JobRunnerOptions) {
    this.handlers = options.handlers ?? defaultStepHandlers();
    this.pollIntervalMs = options.pollIntervalMs ?? 200;
  }

  /**
   * Resolves the jobs a previous run left running (the resumed ones go on in the
   * background: a vault restart does not wait for a failover to finish before it
   * answers), then starts polling the queue.
   */
  async start(): Promise<{ resumed: string[]; failed: string[] }> {
    const { repos, now } = this.options;
    const resumed: string[] = [];
    const failed: string[] = [];
    for (const job of await repos.jobs.list({ state: 'running' })) {
      const decision = resumeAfterRestart(job, now());
      if (decision.outcome === 'failed') {
        if (await persistJob(repos, job, decision.job)) failed.push(job.id);
      } else if (decision.outcome === 'resume') {
        resumed.push(job.id);
        this.launch(job);
      }
    }
    this.current = this.tick();
    await this.current;
    this.schedule();
    return { resumed, failed };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    // A handler that ignores the signal must not hold the vault open: after a grace
    // period the job stays 'running' in the database and the next start resolves it.
    const all = Promise.all([this.current, ...this.running.values()].map((p) => p.catch(() => undefined)));
    await Promise.race([all, new Promise((r) => setTimeout(r, 2000).unref())]);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.current = this.tick().finally(() => this.schedule());
    }, this.pollIntervalMs);
    this.timer.unref();
  }

  /** Starts the oldest queued job of every lane that is free. */
  private async tick(): Promise<void> {
    try {
      const queued = await this.options.repos.jobs.list({ state: 'queued', limit: 200 });
      const seen = new Set<string>();
      for (const job of queued) {
        if (this.stopped || this.running.size >= MAX_RUNNING_JOBS) return;
        const lane = laneOf(job);
        // Only the oldest queued job of a lane may start, and only when the lane is free.
        if (seen.has(lane) || this.running.has(lane)) {
          seen.add(lane);
          continue;
        }
        seen.add(lane);
        const started = startJob(job, this.options.now());
        if (!(await persistJob(this.options.repos, job, started))) continue; // cancelled or claimed meanwhile
        this.launch(started);
      }
    } catch (err) {
      if (!this.stopped) this.options.onError?.(err);
    }
  }

  private launch(job: Job): void {
    const lane = laneOf(job);
    const run: Promise<void> = this.run(job)
      .catch((err: unknown) => {
        if (!this.stopped) this.options.onError?.(err);
      })
      .finally(() => {
        if (this.running.get(lane) === run) this.running.delete(lane);
      });
    this.running.set(lane, run);
  }

  /** Runs a running job's steps until it ends, is cancelled, or the runner stops. */
  private async run(initial: Job): Promise<void> {
    const { repos, now } = this.options;
    let job = initial;
    while (job.state === 'running' && !this.stopped) {
      const i = currentStepIndex(job);
      if (i < 0) throw new LifeboatError('INTERNAL', `job ${job.id} is running with no running step`);
      const name = job.steps[i]!.name;
      const handler = this.handlers[job.kind]?.[name] ?? this.handlers[job.kind]?.['*'];
      let error: string | null = null;
      try {
        if (!handler) throw new Error(`this vault has no handler for '${name}' of ${JOB_KINDS[job.kind].title} yet`);
        const jobId = job.id;
        await handler({
          job,
          stepIndex: i,
          repos,
          now,
          signal: this.abort.signal,
          progress: async (percent) => {
            const fresh = await repos.jobs.get(jobId);
            if (fresh.state === 'running' && currentStepIndex(fresh) === i) await persistJob(repos, fresh, setStepProgress(fresh, percent));
          },
        });
      } catch (err) {
        // Step errors are stored and shown by the API: never with a secret in them.
        error = redact(asLifeboatError(err).message);
      }
      if (this.stopped) return; // left running: the next start decides (resumeAfterRestart)
      const fresh = await repos.jobs.get(job.id);
      if (fresh.state !== 'running' || currentStepIndex(fresh) !== i) return; // cancelled meanwhile
      const next = error === null ? completeStep(fresh, now()) : failStep(fresh, error, now());
      if (!(await persistJob(repos, fresh, next))) return;
      job = next;
    }
  }
}
