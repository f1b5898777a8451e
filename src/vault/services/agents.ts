import { randomBytes } from 'node:crypto';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { setInitialReplicationProgress } from '../../core/item-state.js';
import type { Agent, AgentCommandResult, AgentConfig, AgentDiskStatus, AgentMode, AgentReverseRequest, ItemState, ProcessServerEndpoint, ReplicatedItem, ReplicationControl } from '../../core/model.js';
import { constantTimeEqualHex } from '../../format/crypto.js';
import type { Repositories } from '../db/repositories/index.js';
import { normalizeSerial, type VaultCa } from '../pki/ca.js';
import { sha256Hex } from './db-services.js';

/**
 * Agent enrollment and the agent's heartbeat (docs/replication.md, "Identity,
 * enrollment and certificates"), and the operator's pause and throttle.
 *
 * Secrets follow the configuration server's pattern (registration.ts): an enrollment
 * token is `lbe_` + 32 random bytes, an agent credential `lba_` + 32 random bytes;
 * only their SHA-256 is stored and lookups go by that hash. Every refusal of an
 * enrollment is the same ENROLLMENT_INVALID with the same message, whatever was wrong
 * (unknown, used, expired, another item's, the item no longer protectable), so a caller
 * learns nothing by trying; the reason goes to the audit log's actor only.
 */

export const ENROLLMENT_TOKEN_PREFIX = 'lbe_';
export const AGENT_CREDENTIAL_PREFIX = 'lba_';
const ENROLLMENT_TOKEN = /^lbe_[A-Za-z0-9_-]{40,50}$/;
const AGENT_CREDENTIAL = /^lba_[A-Za-z0-9_-]{40,50}$/;
export const ENROLLMENT_TOKEN_TTL_MS = 24 * 3600 * 1000;
/** A store disk is `<itemId>.<diskName>`; the whole must be a store disk name (≤ 128). */
const DISK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** States in which a machine may (re-)enroll its agent. */
const ENROLLABLE: readonly ItemState[] = ['enabling', 'initial-replication', 'protected', 'test-failover', 'test-failover-cleanup', 'reprotected'];
/**
 * States in which the source machine replicates forward (docs/recovery.md, "Fencing"): the
 * replica processor's REPLICATING_STATES and 'enabling' too: the agent enrolls during the
 * install step and may connect before the job's last step runs. (Not imported from the
 * processor, which imports this module.)
 */
export const REPLICATING: readonly ItemState[] = ['enabling', 'initial-replication', 'protected', 'test-failover', 'test-failover-cleanup'];
/** States in which the source machine is the target of reverse replication (until failback's last step). */
const REVERSE: readonly ItemState[] = ['reprotecting', 'reprotected', 'failing-back'];

/** What the item's agent does in each state: replicate forward, stop (fenced), or take reverse replication. */
export function agentModeOf(state: ItemState): AgentMode {
  if (REPLICATING.includes(state)) return 'replicate';
  if (REVERSE.includes(state)) return 'reverse';
  return 'fenced';
}

export interface EnrollDisk {
  readonly name: string;
  readonly sizeBytes: number;
  readonly tracker: string;
}

export interface EnrollInput {
  readonly itemId: string;
  readonly token: string;
  readonly csrPem: string;
  readonly hostname: string;
  readonly disks: readonly EnrollDisk[];
}

export type { AgentConfig, ProcessServerEndpoint };

export interface EnrollResult {
  readonly machineId: string;
  readonly itemId: string;
  readonly credential: string;
  readonly certificatePem: string;
  readonly caPem: string;
  readonly processServer: ProcessServerEndpoint;
  readonly config: AgentConfig;
}

export type HeartbeatDisk = AgentDiskStatus;

export interface AgentHeartbeat {
  readonly disks: readonly HeartbeatDisk[];
  readonly version: string;
  readonly spoolBytes?: number;
  /** The mode the agent obeys now (absent from older agents: replicate). */
  readonly mode?: AgentMode;
  /** The outcome of the last shutdown / start request it ran. */
  readonly shutdown?: AgentCommandResult | null;
  readonly start?: AgentCommandResult | null;
  /** In reverse mode: the agent's progress (the vault counts acknowledged bytes itself). */
  readonly reverse?: { readonly session: string; readonly lastSequence: number; readonly bytesWritten: number } | null;
}

/** What the vault asks of an item's agent besides replication (kept in settings `agent-requests:<itemId>`). */
export interface AgentRequests {
  readonly shutdownRequest?: { readonly id: string } | null;
  readonly startRequest?: { readonly id: string } | null;
  readonly reverse?: AgentReverseRequest | null;
}

/** The last heartbeat's mode and command outcomes, per item (kept in memory: an agent heartbeats every 5 s). */
export interface AgentReport {
  readonly atMs: number;
  readonly mode: AgentMode;
  readonly shutdown: AgentCommandResult | null;
  readonly start: AgentCommandResult | null;
  readonly reverse: AgentHeartbeat['reverse'] | null;
}

/** The store disk of an item's disk. */
export function storeDiskName(itemId: string, diskName: string): string {
  return `${itemId}.${diskName}`;
}

export class AgentService {
  private readonly reports = new Map<string, AgentReport>();
  private readonly reportWaiters = new Set<() => void>();

  constructor(
    private readonly repos: Repositories,
    private readonly ca: () => Promise<VaultCa>,
    private readonly now: () => Date,
    /** Where agents reach the process server; known once it listens. */
    private readonly processServer: () => ProcessServerEndpoint,
    /** The endpoint of a standalone process server an item names (processServerId); undefined for the built-in one. */
    private readonly standaloneEndpoint: (processServerId: string) => Promise<ProcessServerEndpoint | undefined> = async () => undefined,
  ) {}

  /** A one-time token for the item's agent, valid 24 hours (returned once; only its hash is kept). */
  async createEnrollmentToken(itemId: string): Promise<{ itemId: string; token: string; expiresAt: string }> {
    const item = await this.repos.items.get(itemId);
    if (!ENROLLABLE.includes(item.state)) {
      throw new LifeboatError('ILLEGAL_TRANSITION', `an agent cannot enroll for an item in state '${item.state}'`, {
        details: { state: item.state, action: 'enroll' },
      });
    }
    const token = `${ENROLLMENT_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const expiresAt = new Date(this.now().getTime() + ENROLLMENT_TOKEN_TTL_MS).toISOString();
    await this.repos.enrollmentTokens.create({ itemId, expiresAt, secretHash: sha256Hex(token) });
    return { itemId, token, expiresAt };
  }

  /**
   * Checks an enrollment token without using it: the cheap part, before the CSR's
   * signature is verified. Returns the token's id; ENROLLMENT_INVALID otherwise.
   */
  async checkToken(itemId: string, token: string): Promise<string> {
    // Hash whatever came, so a malformed token costs what a well-formed one does.
    const hash = sha256Hex(typeof token === 'string' ? token : '');
    const row = ENROLLMENT_TOKEN.test(token) ? await this.repos.enrollmentTokens.findBySecretHash(hash) : undefined;
    // The row was found by the hash; compared again in constant time all the same.
    const ok = row !== undefined && constantTimeEqualHex(hash, sha256Hex(token)) && row.itemId === itemId && row.usedAt === null && Date.parse(row.expiresAt) > this.now().getTime();
    if (!ok || !row) throw enrollmentInvalid();
    const item = await this.repos.items.find(itemId);
    if (!item || !ENROLLABLE.includes(item.state)) throw enrollmentInvalid();
    return row.id;
  }

  /**
   * Enrolls the item's agent with a checked token (checkToken): verifies the CSR, uses
   * the token (once: a replay or a race loses), records the machine's disks on the item,
   * issues the certificate and the credential, and replaces any previous agent.
   */
  async enroll(tokenId: string, input: EnrollInput): Promise<EnrollResult> {
    checkDisks(input.disks);
    const item = await this.repos.items.get(input.itemId);
    const ca = await this.ca();
    const cert = await ca.signAgentCsr(input.csrPem, item.machineId);
    const credential = `${AGENT_CREDENTIAL_PREFIX}${randomBytes(32).toString('base64url')}`;
    await this.repos.db.transaction(async () => {
      if (!(await this.repos.enrollmentTokens.use(tokenId))) throw enrollmentInvalid();
      await this.repos.items.update(item.id, { disks: input.disks.map((d) => ({ name: d.name, sizeBytes: d.sizeBytes })) });
      await this.repos.agents.enroll({
        itemId: item.id,
        machineId: item.machineId,
        hostname: input.hostname,
        certificateSerial: cert.serial,
        certificateNotAfter: cert.notAfter,
        disks: input.disks.map((d) => ({ name: d.name, sizeBytes: d.sizeBytes, state: 'initial', initialPercent: 0, ackedSequence: 0, lagMs: 0, lastError: null })),
        credentialHash: sha256Hex(credential),
      });
    });
    const config = await this.config(await this.repos.items.get(item.id));
    return {
      machineId: item.machineId,
      itemId: item.id,
      credential,
      certificatePem: cert.certPem,
      caPem: ca.caPem,
      processServer: config.processServer,
      config,
    };
  }

  /** The agent a credential belongs to; undefined for anything else (never throws for bad input). */
  async authenticate(credential: string): Promise<Agent | undefined> {
    if (!AGENT_CREDENTIAL.test(credential)) return undefined;
    return this.repos.agents.findByCredentialHash(sha256Hex(credential));
  }

  /**
   * Records an agent's heartbeat: its disks' states, and the item's initial-replication
   * progress (the smallest of its disks' percentages; never going backwards). Answers
   * the agent's configuration, which it obeys (pause, throttle, policy).
   */
  async heartbeat(agentId: string, input: AgentHeartbeat): Promise<AgentConfig> {
    const agent = await this.repos.agents.get(agentId);
    const item = await this.repos.items.get(agent.itemId);
    const disks: AgentDiskStatus[] = input.disks.map((d) => ({ ...d, lastError: d.lastError === null ? null : d.lastError.slice(0, 1000) }));
    await this.repos.agents.heartbeat(agent.id, { version: input.version, lastHeartbeatAt: this.now().toISOString(), disks });
    const outcome = (r: AgentCommandResult | null | undefined): AgentCommandResult | null => (r ? { ...r, error: r.error === null ? null : r.error.slice(0, 1000) } : null);
    this.reports.set(item.id, { atMs: this.now().getTime(), mode: input.mode ?? 'replicate', shutdown: outcome(input.shutdown), start: outcome(input.start), reverse: input.reverse ?? null });
    await this.settleRequests(item.id, input);
    for (const wake of [...this.reportWaiters]) wake();
    const known = new Set(item.disks.map((d) => d.name));
    const mine = disks.filter((d) => known.has(d.name));
    if (item.state === 'initial-replication' && mine.length === item.disks.length && mine.length > 0) {
      const percent = Math.floor(Math.min(...mine.map((d) => (d.state === 'continuous' ? 100 : d.initialPercent))));
      const next = setInitialReplicationProgress(item, Math.max(0, Math.min(100, percent)));
      if (next.initialReplicationPercent !== item.initialReplicationPercent) {
        await this.repos.items.updateState(item.id, item.state, item.state, { initialReplicationPercent: next.initialReplicationPercent });
      }
    }
    const sizes = new Map(disks.map((d) => [d.name, d.sizeBytes]));
    if (item.disks.some((d) => sizes.has(d.name) && sizes.get(d.name) !== d.sizeBytes)) {
      await this.repos.items.update(item.id, { disks: item.disks.map((d) => ({ name: d.name, sizeBytes: sizes.get(d.name) ?? d.sizeBytes })) });
    }
    return this.config(await this.repos.items.get(item.id));
  }

  async config(item: ReplicatedItem): Promise<AgentConfig> {
    const policy = await this.repos.policies.get(item.policyId);
    const control = await this.repos.replicationControls.get(item.id);
    return {
      mode: agentModeOf(item.state),
      generation: item.generation,
      paused: control.paused,
      throttleBytesPerSec: control.throttleBytesPerSec,
      crashConsistentFrequencySeconds: policy.crashConsistentFrequencySeconds,
      appConsistentFrequencyMinutes: policy.appConsistentFrequencyMinutes,
      disks: item.disks.map((d) => ({ name: d.name, storeDisk: storeDiskName(item.id, d.name) })),
      processServer: (item.processServerId === null ? undefined : await this.standaloneEndpoint(item.processServerId)) ?? this.processServer(),
      ...(await this.requests(item.id)),
    };
  }

  /** The item's agent's last report since `sinceMs` (undefined when it has not heartbeaten since). */
  report(itemId: string, sinceMs = 0): AgentReport | undefined {
    const r = this.reports.get(itemId);
    return r && r.atMs >= sinceMs ? r : undefined;
  }

  /**
   * Resolves with the first report (from the next heartbeat on) that `accept` takes;
   * undefined after `timeoutMs`; rejects when `signal` aborts.
   */
  async waitForReport<T>(itemId: string, accept: (r: AgentReport) => T | undefined, options: { timeoutMs: number; signal?: AbortSignal; sinceMs?: number }): Promise<T | undefined> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      options.signal?.throwIfAborted();
      const r = this.report(itemId, options.sinceMs ?? 0);
      const v = r && accept(r);
      if (v !== undefined) return v;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.reportWaiters.delete(done);
          options.signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 1000));
        this.reportWaiters.add(done);
        options.signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  /** What the vault asks of the item's agent now (shutdown, start, reverse session). */
  async requests(itemId: string): Promise<AgentRequests> {
    return (await this.repos.settings.get<AgentRequests>(requestsKey(itemId))) ?? {};
  }

  /** Changes what the vault asks of the item's agent; the agent learns it at its next heartbeat. */
  async setRequests(itemId: string, patch: AgentRequests): Promise<AgentRequests> {
    const next = { ...(await this.requests(itemId)), ...patch };
    await this.repos.settings.set(requestsKey(itemId), next);
    return next;
  }

  /** Asks the item's agent to run its shutdown command once; returns the request's id (echoed in the agent's heartbeat). */
  async requestShutdown(itemId: string): Promise<string> {
    await this.repos.items.get(itemId);
    const id = `shutdown-${randomBytes(8).toString('hex')}`;
    await this.setRequests(itemId, { shutdownRequest: { id } });
    return id;
  }

  /** Asks the item's agent to run its start command once; returns the request's id. */
  async requestStart(itemId: string): Promise<string> {
    await this.repos.items.get(itemId);
    const id = `start-${randomBytes(8).toString('hex')}`;
    await this.setRequests(itemId, { startRequest: { id } });
    return id;
  }

  /** A request the agent reported done is withdrawn, so a restarted agent is never asked twice. */
  private async settleRequests(itemId: string, input: AgentHeartbeat): Promise<void> {
    const current = await this.requests(itemId);
    const patch: { shutdownRequest?: null; startRequest?: null } = {};
    if (current.shutdownRequest && input.shutdown?.id === current.shutdownRequest.id) patch.shutdownRequest = null;
    if (current.startRequest && input.start?.id === current.startRequest.id) patch.startRequest = null;
    if (Object.keys(patch).length > 0) await this.setRequests(itemId, patch);
  }

  /** The item's current agent (NOT_FOUND when it never enrolled). */
  async agentOf(itemId: string): Promise<Agent> {
    await this.repos.items.get(itemId);
    const agent = await this.repos.agents.findByItem(itemId);
    if (!agent) throw new LifeboatError('NOT_FOUND', `no agent has enrolled for item ${itemId}`, { details: { item: itemId } });
    return agent;
  }

  /** The item's pause and throttle (not paused, no limit when never set); NOT_FOUND for an unknown item. */
  async controlOf(itemId: string): Promise<ReplicationControl> {
    await this.repos.items.get(itemId);
    return this.repos.replicationControls.get(itemId);
  }

  async setControl(itemId: string, patch: Partial<Omit<ReplicationControl, 'itemId'>>): Promise<ReplicationControl> {
    const item = await this.repos.items.get(itemId);
    if (['failing-over', 'failed-over', 'committed', 'disabled'].includes(item.state)) {
      throw new LifeboatError('ILLEGAL_TRANSITION', `replication of an item in state '${item.state}' cannot be paused, resumed or throttled`, {
        details: { state: item.state, action: 'replication-control' },
      });
    }
    return this.repos.replicationControls.set(itemId, patch);
  }

  /**
   * The process server's question: is this certificate the current one of an enrolled
   * machine? AGENT_UNAUTHORIZED otherwise (unknown machine, replaced certificate, item
   * gone); GENERATION_FENCED for an item that does not replicate forward in its state
   * (failed over, reverse replication, disabled): the source is not the writer then.
   */
  async authorize(input: { machineId: string; certificateSerial: string }): Promise<{
    machineId: string;
    itemId: string;
    vaultId: string;
    generation: number;
    disks: readonly string[];
  }> {
    const agent = typeof input.machineId === 'string' ? await this.repos.agents.findByMachine(input.machineId) : undefined;
    const serial = typeof input.certificateSerial === 'string' ? normalizeSerial(input.certificateSerial) : '';
    if (!agent || !constantTimeEqualHex(sha256Hex(agent.certificateSerial), sha256Hex(serial))) {
      throw new LifeboatError('AGENT_UNAUTHORIZED', `machine ${String(input.machineId)} has no enrolled agent with that certificate`, {
        details: { machineId: String(input.machineId) },
      });
    }
    let item: ReplicatedItem;
    try {
      item = await this.repos.items.get(agent.itemId);
    } catch (err) {
      if (isLifeboatError(err, 'NOT_FOUND')) throw new LifeboatError('AGENT_UNAUTHORIZED', `machine ${agent.machineId} is no longer protected`);
      throw err;
    }
    if (!REPLICATING.includes(item.state)) {
      throw new LifeboatError('GENERATION_FENCED', `item ${item.id} does not replicate from its source in state '${item.state}' (generation ${item.generation})`, {
        details: { machineId: agent.machineId, state: item.state, current: item.generation },
      });
    }
    return {
      machineId: agent.machineId,
      itemId: item.id,
      vaultId: item.vaultId,
      generation: item.generation,
      disks: item.disks.map((d) => storeDiskName(item.id, d.name)),
    };
  }
}

function requestsKey(itemId: string): string {
  return `agent-requests:${itemId}`;
}

function enrollmentInvalid(): LifeboatError {
  return new LifeboatError('ENROLLMENT_INVALID', 'the enrollment token is not valid for this item (unknown, used, expired or another item\'s); ask for a new one: lifeboat item enroll-token ITEM');
}

function checkDisks(disks: readonly EnrollDisk[]): void {
  const errors: { in: 'body'; field: string; message: string }[] = [];
  const seen = new Set<string>();
  disks.forEach((d, i) => {
    if (!DISK_NAME.test(d.name)) errors.push({ in: 'body', field: `/disks/${i}/name`, message: 'must be 1-63 of A-Z a-z 0-9 . _ - and start with a letter or digit' });
    if (seen.has(d.name)) errors.push({ in: 'body', field: `/disks/${i}/name`, message: `duplicate disk name '${d.name}'` });
    seen.add(d.name);
  });
  if (disks.length === 0) errors.push({ in: 'body', field: '/disks', message: 'must name at least one disk' });
  if (errors.length > 0) {
    throw new LifeboatError('VALIDATION', `the disks are not valid: ${errors[0]?.field} ${errors[0]?.message}`, { details: { errors } });
  }
}
