import { isIP } from 'node:net';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { enableItem } from '../../core/item-state.js';
import { JOB_KINDS, cancelJob } from '../../core/jobs.js';
import type { Alert, ComputeSettings, Job, JobState, Machine, PushAccount, ReplicatedItem } from '../../core/model.js';
import { checkOsSupport } from '../../core/os-support.js';
import type { Repositories } from '../db/repositories/index.js';
import type { Page, PageRequest } from '../http/services.js';
import { persistJob } from '../jobs/job-store.js';
import type { SecretBox } from '../secrets/secret-box.js';
import { paginate } from '../http/paging.js';

/**
 * Seed step 1 (machines, push-install accounts) and step 5 (enable replication),
 * jobs and alerts, on the vault database. Contract as in ../http/services.ts:
 * NOT_FOUND for a missing id, CONFLICT for a taken name or an already protected
 * machine, VALIDATION with `details.errors` for bad input.
 */

export interface MachineInput {
  configServerId: string;
  name: string;
  privateIp: string;
  os: string;
  kernel?: string | null;
}

function validationError(message: string, errors: { field: string; value: unknown; message: string }[]): LifeboatError {
  return new LifeboatError('VALIDATION', message, { details: { errors } });
}

export class DbMachines {
  constructor(private readonly repos: Repositories) {}

  async list(page: PageRequest, filter: { configServerId?: string }): Promise<Page<Machine>> {
    return paginate(await this.repos.machines.list(filter.configServerId ? { configServerId: filter.configServerId } : {}), page);
  }

  get(id: string): Promise<Machine> {
    return this.repos.machines.get(id);
  }

  /** Adds a machine by name + private IP + OS and runs the supported-OS check at once. */
  async create(input: MachineInput): Promise<Machine> {
    if (isIP(input.privateIp) === 0) {
      throw validationError(`privateIp '${input.privateIp}' is not an IPv4 or IPv6 address`, [
        { field: 'privateIp', value: input.privateIp, message: 'must be an IPv4 or IPv6 address' },
      ]);
    }
    await this.repos.configServers.get(input.configServerId);
    const kernel = input.kernel ?? null;
    const check = checkOsSupport({ os: input.os, kernel });
    return this.repos.machines.create({
      configServerId: input.configServerId,
      name: input.name,
      privateIp: input.privateIp,
      os: input.os,
      kernel,
      supported: check.supported,
      supportReason: check.reason,
    });
  }

  /** Runs the supported-OS check again (the rules or the machine's kernel may have changed). */
  async check(id: string): Promise<Machine> {
    const machine = await this.repos.machines.get(id);
    const check = checkOsSupport(machine);
    return this.repos.machines.update(id, { supported: check.supported, supportReason: check.reason });
  }
}

export interface AccountInput {
  configServerId: string;
  name: string;
  username: string;
  password?: string;
  privateKey?: string;
}

/** The AAD context a push account's secret is sealed under: a sealed value moved to another row does not open. */
export function pushAccountContext(accountId: string): string {
  return `push-account:${accountId}`;
}

/**
 * Push-install accounts. The secret is sealed with the vault's SecretBox before it
 * reaches the database and is never returned: the account row is created with a
 * placeholder ciphertext in the same transaction and then given the sealed secret,
 * because the sealing context names the account id.
 */
export class DbAccounts {
  constructor(
    private readonly repos: Repositories,
    private readonly box: SecretBox,
  ) {}

  async list(page: PageRequest, filter: { configServerId?: string }): Promise<Page<PushAccount>> {
    return paginate(await this.repos.pushAccounts.list(filter.configServerId ? { configServerId: filter.configServerId } : {}), page);
  }

  get(id: string): Promise<PushAccount> {
    return this.repos.pushAccounts.get(id);
  }

  async create(input: AccountInput): Promise<PushAccount> {
    const given = [input.password, input.privateKey].filter((s) => s !== undefined).length;
    if (given !== 1) {
      throw validationError('give exactly one of password or privateKey', [
        { field: 'password', value: '(hidden)', message: 'exactly one of password or privateKey is required' },
      ]);
    }
    await this.repos.configServers.get(input.configServerId);
    const kind = input.password !== undefined ? 'password' : 'key';
    const secret = (input.password ?? input.privateKey) as string;
    return this.repos.db.transaction(async () => {
      const account = await this.repos.pushAccounts.create({
        configServerId: input.configServerId,
        name: input.name,
        username: input.username,
        kind,
        // Placeholder, replaced below in the same transaction (the context needs the id).
        encryptedSecret: Buffer.from('pending'),
      });
      const sealed = this.box.seal(secret, pushAccountContext(account.id));
      return this.repos.pushAccounts.update(account.id, { encryptedSecret: Buffer.from(sealed, 'utf8') });
    });
  }

  /** The account's secret in clear, for push install only; SECRET_UNREADABLE when it does not open. */
  async openSecret(id: string): Promise<{ account: PushAccount; secret: string }> {
    const account = await this.repos.pushAccounts.get(id);
    const sealed = (await this.repos.pushAccounts.getEncryptedSecret(id)).toString('utf8');
    return { account, secret: this.box.open(sealed, pushAccountContext(id)) };
  }
}

export interface ComputeInput {
  targetName?: string;
  size?: string;
  network?: string | null;
  subnet?: string | null;
  ip?: string | null;
}

export interface EnableInput {
  vaultId: string;
  policyId: string;
  configServerId: string;
  processServerId?: string;
  /** `push` (default): push install over SSH with `accountId`; `manual`: the operator installs the agent and enrolls it. */
  install?: 'push' | 'manual';
  accountId?: string;
  machines: string[];
  /** Target settings per machine; a machine left out gets its own name, the default size and no network. */
  compute?: (ComputeInput & { machineId: string })[];
}

/** What enable remembers per item for the "Enable protection" job (the item model has no account field). */
export interface EnableParams {
  /** null when the agent is installed by hand (install mode `manual`). */
  readonly accountId: string | null;
  readonly configServerId: string;
}

export function enableParamsKey(itemId: string): string {
  return `item-enable:${itemId}`;
}

export const DEFAULT_TARGET_SIZE = 'small';

function checkIp(field: string, ip: string | null | undefined, errors: { field: string; value: unknown; message: string }[]): void {
  if (ip !== undefined && ip !== null && isIP(ip) === 0) errors.push({ field, value: ip, message: 'must be an IPv4 or IPv6 address' });
}

export class DbReplication {
  constructor(
    private readonly repos: Repositories,
    private readonly now: () => Date,
  ) {}

  /**
   * Seed step 5: one replicated item per machine (state from `enableItem()`) and
   * one "Enable protection" job per item, all in one transaction: either every
   * machine is enabled or none is. Refuses, naming each machine and the reason, a
   * machine that is unsupported, of another configuration server or already protected.
   */
  async enable(input: EnableInput, initiator: string): Promise<{ items: ReplicatedItem[]; jobs: Job[] }> {
    const unique = [...new Set(input.machines)];
    if (unique.length !== input.machines.length) {
      throw validationError('a machine is listed twice', [{ field: 'machines', value: input.machines, message: 'machine ids must be unique' }]);
    }
    const computeBy = new Map<string, ComputeInput>();
    for (const { machineId: id, ...c } of input.compute ?? []) {
      if (computeBy.has(id)) {
        throw validationError(`compute settings name machine ${id} twice`, [{ field: 'compute', value: id, message: 'one entry per machine' }]);
      }
      computeBy.set(id, c);
      if (!unique.includes(id)) {
        throw validationError(`compute settings name machine ${id}, which is not being enabled`, [
          { field: `compute/${id}`, value: id, message: 'not one of machines' },
        ]);
      }
    }
    const errors: { field: string; value: unknown; message: string }[] = [];
    for (const [id, c] of computeBy) checkIp(`compute/${id}/ip`, c.ip, errors);
    if (errors.length > 0) throw validationError('invalid compute settings', errors);

    await this.repos.vaults.get(input.vaultId);
    const policy = await this.repos.policies.get(input.policyId);
    if (policy.vaultId !== input.vaultId) {
      throw validationError(`policy ${policy.name} belongs to another vault`, [{ field: 'policyId', value: input.policyId, message: 'policy of another vault' }]);
    }
    const server = await this.repos.configServers.get(input.configServerId);
    if (server.vaultId !== input.vaultId) {
      throw validationError(`configuration server ${server.name} is registered with another vault`, [
        { field: 'configServerId', value: input.configServerId, message: 'configuration server of another vault' },
      ]);
    }
    if (input.processServerId !== undefined) {
      const ps = await this.repos.processServers.get(input.processServerId);
      if (ps.configServerId !== input.configServerId) {
        throw validationError(`process server ${ps.name} belongs to another configuration server`, [
          { field: 'processServerId', value: input.processServerId, message: 'process server of another configuration server' },
        ]);
      }
    }
    const manual = input.install === 'manual';
    if (manual && input.accountId !== undefined) {
      throw validationError('a manual install takes no push-install account', [{ field: 'accountId', value: input.accountId, message: 'not allowed with install: manual' }]);
    }
    if (!manual) {
      if (input.accountId === undefined) {
        throw validationError('push install needs a push-install account (or give install: manual and enroll the agent by hand)', [
          { field: 'accountId', value: null, message: 'required unless install is manual' },
        ]);
      }
      const account = await this.repos.pushAccounts.get(input.accountId);
      if (account.configServerId !== input.configServerId) {
        throw validationError(`push account ${account.name} belongs to another configuration server`, [
          { field: 'accountId', value: input.accountId, message: 'account of another configuration server' },
        ]);
      }
    }

    const machines: Machine[] = [];
    const refusals: { field: string; value: unknown; message: string }[] = [];
    for (const id of unique) {
      const m = await this.repos.machines.get(id);
      machines.push(m);
      if (m.configServerId !== input.configServerId) {
        refusals.push({ field: 'machines', value: id, message: `machine ${m.name} belongs to another configuration server` });
      } else if (m.supported === false) {
        refusals.push({ field: 'machines', value: id, message: `machine ${m.name} is not supported: ${m.supportReason ?? 'no reason recorded'}` });
      }
    }
    if (refusals.length > 0) {
      throw validationError(`cannot enable replication: ${refusals.map((r) => r.message).join('; ')}`, refusals);
    }
    for (const m of machines) {
      const existing = await this.repos.items.findByMachine(m.id);
      if (existing) {
        throw new LifeboatError('CONFLICT', `machine ${m.name} is already protected (item ${existing.id}, state '${existing.state}')`, {
          details: { machineId: m.id, itemId: existing.id, state: existing.state },
          retryable: false,
        });
      }
    }

    return this.repos.db.transaction(async () => {
      const items: ReplicatedItem[] = [];
      const jobs: Job[] = [];
      for (const m of machines) {
        const start = enableItem();
        const c = computeBy.get(m.id) ?? {};
        const compute: ComputeSettings = {
          targetName: c.targetName ?? m.name,
          size: c.size ?? DEFAULT_TARGET_SIZE,
          network: c.network ?? null,
          subnet: c.subnet ?? null,
          ip: c.ip ?? null,
        };
        let item: ReplicatedItem;
        try {
          item = await this.repos.items.create({
            vaultId: input.vaultId,
            machineId: m.id,
            policyId: input.policyId,
            processServerId: input.processServerId ?? null,
            state: start.state,
            compute,
            disks: [],
          });
        } catch (err) {
          if (isLifeboatError(err, 'CONFLICT')) {
            throw new LifeboatError('CONFLICT', `machine ${m.name} is already protected`, { cause: err, details: { machineId: m.id }, retryable: false });
          }
          throw err;
        }
        item = await this.repos.items.update(item.id, { generation: start.generation, initialReplicationPercent: start.initialReplicationPercent });
        const params: EnableParams = { accountId: input.accountId ?? null, configServerId: input.configServerId };
        await this.repos.settings.set(enableParamsKey(item.id), params);
        for (const kind of start.jobs) {
          jobs.push(await this.repos.jobs.create({ kind, itemId: item.id, initiator, steps: JOB_KINDS[kind].steps.map((s) => s.name) }));
        }
        items.push(item);
      }
      return { items, jobs };
    });
  }

  async listItems(page: PageRequest, filter: { vaultId?: string; state?: ReplicatedItem['state'] }): Promise<Page<ReplicatedItem>> {
    return paginate(await this.repos.items.list(filter), page);
  }

  getItem(id: string): Promise<ReplicatedItem> {
    return this.repos.items.get(id);
  }

  async updateCompute(id: string, patch: ComputeInput): Promise<ReplicatedItem> {
    const errors: { field: string; value: unknown; message: string }[] = [];
    checkIp('ip', patch.ip, errors);
    if (errors.length > 0) throw validationError('invalid compute settings', errors);
    const item = await this.repos.items.get(id);
    if (['failing-over', 'failed-over', 'committed', 'failing-back', 'disabled'].includes(item.state)) {
      throw new LifeboatError('ILLEGAL_TRANSITION', `cannot change the compute settings of a replicated item in state '${item.state}'`, {
        details: { state: item.state, action: 'update-compute' },
      });
    }
    return this.repos.items.update(id, { compute: { ...item.compute, ...patch } });
  }
}

export class DbJobs {
  constructor(
    private readonly repos: Repositories,
    private readonly now: () => Date,
  ) {}

  async list(page: PageRequest, filter: { state?: JobState; itemId?: string }): Promise<Page<Job>> {
    return paginate(await this.repos.jobs.list(filter), page);
  }

  get(id: string): Promise<Job> {
    return this.repos.jobs.get(id);
  }

  /** Operator cancel: src/core/jobs.ts decides (refused for failover, commit, ...); the runner notices before its next step. */
  async cancel(id: string): Promise<Job> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const job = await this.repos.jobs.get(id);
      const cancelled = cancelJob(job, this.now());
      if (await persistJob(this.repos, job, cancelled)) return this.repos.jobs.get(id);
    }
    throw new LifeboatError('CONFLICT', `job ${id} kept changing while being cancelled; try again`);
  }
}

export class DbAlerts {
  constructor(private readonly repos: Repositories) {}

  async list(page: PageRequest, filter: { open?: boolean }): Promise<Page<Alert>> {
    return paginate(await this.repos.alerts.list(filter.open === undefined ? {} : { open: filter.open }), page);
  }
}
