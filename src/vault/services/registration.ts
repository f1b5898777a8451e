import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { LifeboatError } from '../../core/errors.js';
import type { ConfigServer, Machine, ProcessServer, RegistrationKey, ServerHealth } from '../../core/model.js';
import { checkOsSupport } from '../../core/os-support.js';
import {
  MAX_CLOCK_SKEW_MS,
  REGISTRATION_KEY_PREFIX,
  issueRegistrationKey,
  verifyRegistrationKey,
} from '../../core/registration-key.js';
import type { Repositories } from '../db/repositories/index.js';
import type { SecretBox } from '../secrets/secret-box.js';
import { sha256Hex } from './db-services.js';

/** Server credentials: `lbs_` + 32 random bytes; only the SHA-256 is stored (config_servers.credential_hash). */
export const SERVER_CREDENTIAL_PREFIX = 'lbs_';
const SERVER_CREDENTIAL = /^lbs_[A-Za-z0-9_-]{40,50}$/;
const SECRET_BYTES = 32;
/** Name of the process server every configuration server runs (seed: "the built-in process server"). */
export const BUILT_IN_PROCESS_SERVER = 'built-in';
export const PROCESS_SERVER_PORT = 9443;
/** Spool fuller than this is a warning. */
const SPOOL_WARNING_RATIO = 0.9;
/** At most this many machines in one discovery report (the HTTP schema says the same; the 1 MiB body limit applies too). */
export const MAX_DISCOVERED_MACHINES = 10_000;
/** Settings key of a configuration server's pending refresh; the value is the time it was requested. */
const refreshKey = (serverId: string) => `refresh-requested:${serverId}`;

export interface IssuedKey extends RegistrationKey {
  /** The downloadable key text: returned once, never stored (only its hash). */
  readonly key: string;
}

export interface RegisterInput {
  readonly registrationKey: string;
  readonly name: string;
  readonly address: string;
  readonly version: string;
  /** The caller's clock, ISO-8601. */
  readonly clock: string;
}

export interface ProcessServerReport {
  readonly name: string;
  readonly spoolUsedBytes: number;
  readonly spoolLimitBytes: number;
  readonly throughputBytesPerSec: number;
}

/** One machine a configuration server found on its network (same fields as POST /machines). */
export interface DiscoveredMachine {
  readonly name: string;
  readonly privateIp: string;
  readonly os: string;
  /** Omitted or null: not known to the configuration server; a kernel the vault already knows is kept. */
  readonly kernel?: string | null;
}

export interface HeartbeatInput {
  readonly version: string;
  readonly clock: string;
  readonly processServers?: readonly ProcessServerReport[];
  /** Present when discovery ran since the last heartbeat: every machine it found. */
  readonly discovered?: readonly DiscoveredMachine[];
}

export interface DiscoveryOutcome {
  readonly created: number;
  readonly updated: number;
  readonly unchanged: number;
}

export interface HeartbeatResult {
  readonly server: ConfigServer;
  readonly processServers: ProcessServer[];
  readonly clockSkewMs: number;
  /** The vault's instruction: run discovery and send its report with a coming heartbeat. */
  readonly refreshRequested: boolean;
  /** Only when the heartbeat carried a discovery report. */
  readonly discovery?: DiscoveryOutcome;
}

/**
 * Seed step 3: registration keys, configuration-server registration and
 * heartbeats, on the vault database.
 *
 * Each vault signs its keys with its own 32-byte secret, made on first use and
 * kept in the settings table sealed with the vault key (`vault-secret:<vaultId>`,
 * the same string is the SecretBox context, so a sealed value moved to another
 * vault's row fails to open). The key's payload names a random key id (`keyId`,
 * a nonce); the database row is found by the SHA-256 of the whole key text, so a
 * revoked or deleted row, or a validly-signed text the vault never stored, fails.
 */
export class RegistrationService {
  /** Serialises secret creation per vault within this process (two first keys at once must agree on one secret). */
  private readonly secretInFlight = new Map<string, Promise<Buffer>>();
  /**
   * Heartbeats not yet written. Heartbeat times are soft state: they are written
   * together, in one transaction, by flushHeartbeats() (every second in the
   * server) instead of one fsynced transaction each; reads through this service
   * see them at once. A crash loses at most that second of heartbeat times.
   */
  private readonly pendingServers = new Map<string, Partial<ConfigServer>>();
  private readonly pendingProcess = new Map<string, Partial<ProcessServer>>();

  constructor(
    private readonly repos: Repositories,
    private readonly box: SecretBox,
    private readonly now: () => Date,
  ) {}

  private vaultSecret(vaultId: string): Promise<Buffer> {
    const pending = this.secretInFlight.get(vaultId);
    if (pending) return pending;
    const loading = this.loadOrCreateSecret(vaultId).finally(() => this.secretInFlight.delete(vaultId));
    this.secretInFlight.set(vaultId, loading);
    return loading;
  }

  private async loadOrCreateSecret(vaultId: string): Promise<Buffer> {
    const key = `vault-secret:${vaultId}`;
    const sealed = await this.repos.settings.get<string>(key);
    if (typeof sealed === 'string') return Buffer.from(this.box.open(sealed, key), 'base64');
    const secret = randomBytes(SECRET_BYTES);
    await this.repos.settings.set(key, this.box.seal(secret.toString('base64'), key));
    return secret;
  }

  async createKey(vaultId: string): Promise<IssuedKey> {
    await this.repos.vaults.get(vaultId); // NOT_FOUND first
    const secret = await this.vaultSecret(vaultId);
    const issued = issueRegistrationKey(secret, { vaultId, keyId: randomBytes(16).toString('hex') }, this.now());
    const row = await this.repos.registrationKeys.create({ vaultId, expiresAt: issued.payload.expiresAt, secretHash: sha256Hex(issued.text) });
    // The row's expiry comes from the payload; createdAt is the repository's clock (the same clock).
    return { ...row, key: issued.text };
  }

  async listKeys(vaultId: string): Promise<RegistrationKey[]> {
    await this.repos.vaults.get(vaultId);
    return this.repos.registrationKeys.list({ vaultId });
  }

  /** NOT_FOUND unless the key belongs to that vault; revoking twice is fine. */
  async revokeKey(vaultId: string, keyId: string): Promise<void> {
    const keys = await this.repos.registrationKeys.list({ vaultId });
    if (!keys.some((k) => k.id === keyId)) throw new LifeboatError('NOT_FOUND', `vault ${vaultId} has no registration key ${keyId}`);
    await this.repos.registrationKeys.revoke(keyId);
  }

  /**
   * Checks a presented key: signature with its vault's secret, purpose, expiry
   * (REGISTRATION_KEY_EXPIRED), the caller's clock (CLOCK_SKEW), then that the vault
   * stored it and did not revoke it (REGISTRATION_KEY_INVALID).
   */
  async verifyKey(text: string, callerClock: string): Promise<{ vaultId: string; key: RegistrationKey }> {
    const clock = parseClock(callerClock);
    const vaultId = claimedVault(text);
    const vault = await this.repos.vaults.find(vaultId);
    if (!vault) throw invalidKey('no such vault');
    const secret = await this.vaultSecret(vault.id);
    const payload = verifyRegistrationKey(secret, text, { now: this.now(), callerClock: clock, maxSkewMs: MAX_CLOCK_SKEW_MS });
    const row = await this.repos.registrationKeys.findBySecretHash(sha256Hex(text.trim()));
    if (!row || row.vaultId !== payload.vaultId) throw invalidKey('unknown to this vault');
    if (row.revoked) throw invalidKey('revoked');
    return { vaultId: vault.id, key: row };
  }

  /**
   * Creates the configuration server and its built-in process server, and issues
   * the server credential (returned once). CONFLICT when the vault already has a
   * configuration server of that name.
   */
  async register(vaultId: string, input: Omit<RegisterInput, 'registrationKey' | 'clock'>): Promise<{ server: ConfigServer; processServer: ProcessServer; credential: string }> {
    const credential = `${SERVER_CREDENTIAL_PREFIX}${randomBytes(SECRET_BYTES).toString('base64url')}`;
    return this.repos.db.transaction(async () => {
      const server = await this.repos.configServers.create({ vaultId, name: input.name, address: input.address, version: input.version, credentialHash: sha256Hex(credential) });
      const processServer = await this.repos.processServers.create({
        configServerId: server.id,
        name: BUILT_IN_PROCESS_SERVER,
        address: `${hostOf(input.address)}:${PROCESS_SERVER_PORT}`,
        version: input.version,
      });
      return { server, processServer, credential };
    });
  }

  /** The configuration server a credential belongs to; undefined for anything else (never throws for bad input). */
  async authenticateServer(credential: string): Promise<ConfigServer | undefined> {
    if (!SERVER_CREDENTIAL.test(credential)) return undefined;
    return this.repos.configServers.findByCredentialHash(sha256Hex(credential));
  }

  /**
   * Records a heartbeat. A clock that drifted more than 5 minutes is not refused
   * (the server must keep reporting) but makes its health `warning`, as does a
   * process server whose spool is over 90 % full. Unknown process-server names are
   * scale-out process servers: they are added.
   *
   * A heartbeat carrying `discovered` is a discovery report (see upsertDiscovered):
   * it also clears a pending refresh, since that is the moment discovery ran. The
   * answer's `refreshRequested` is the vault's instruction to the server, true
   * while a refresh is pending.
   */
  async heartbeat(serverId: string, input: HeartbeatInput): Promise<HeartbeatResult> {
    const clock = parseClock(input.clock);
    if (input.discovered) checkDiscovered(input.discovered);
    const at = this.now();
    const clockSkewMs = clock.getTime() - at.getTime();
    const atIso = at.toISOString();
    if (!input.discovered) {
      const buffered = await this.bufferedHeartbeat(serverId, input, atIso, clockSkewMs);
      if (buffered) return buffered;
    }
    // A discovery report or a new process server is written at once, and supersedes what is buffered.
    this.pendingServers.delete(serverId);
    return this.repos.db.transaction(async () => {
      const current = await this.repos.configServers.get(serverId);
      const existing = await this.repos.processServers.list({ configServerId: serverId });
      for (const p of existing) this.pendingProcess.delete(p.id);
      let worst: ServerHealth = Math.abs(clockSkewMs) > MAX_CLOCK_SKEW_MS ? 'warning' : 'healthy';
      for (const report of input.processServers ?? []) {
        const full = report.spoolLimitBytes > 0 && report.spoolUsedBytes > report.spoolLimitBytes * SPOOL_WARNING_RATIO;
        const health: ServerHealth = full ? 'warning' : 'healthy';
        if (health === 'warning') worst = 'warning';
        const found = existing.find((p) => p.name === report.name);
        const id =
          found?.id ??
          (await this.repos.processServers.create({ configServerId: serverId, name: report.name, address: current.address, version: input.version })).id;
        await this.repos.processServers.update(id, { ...report, version: input.version, lastHeartbeatAt: atIso, health });
      }
      const server = await this.repos.configServers.update(serverId, { version: input.version, lastHeartbeatAt: atIso, health: worst });
      let discovery: DiscoveryOutcome | undefined;
      let refreshRequested: boolean;
      if (input.discovered) {
        discovery = await this.upsertDiscovered(serverId, input.discovered);
        await this.repos.settings.delete(refreshKey(serverId));
        refreshRequested = false;
      } else {
        refreshRequested = (await this.repos.settings.get(refreshKey(serverId))) !== undefined;
      }
      return {
        server,
        processServers: await this.repos.processServers.list({ configServerId: serverId }),
        clockSkewMs,
        refreshRequested,
        ...(discovery ? { discovery } : {}),
      };
    });
  }

  /**
   * Upserts a discovery report as machines of the configuration server, matched
   * by name: new names are created with `discovered: true`; known ones (added by
   * hand or found before) get the reported IP and OS, the kernel when one is
   * reported, `discovered: true`, and the supported-OS check again. A machine
   * missing from the report is left exactly as it is: discovery never deletes or
   * alters a machine, since replicated items may refer to it and a host that is
   * down for a moment is not gone. Removing machines is the operator's call.
   */
  private async upsertDiscovered(serverId: string, report: readonly DiscoveredMachine[]): Promise<DiscoveryOutcome> {
    const known = new Map<string, Machine>((await this.repos.machines.list({ configServerId: serverId })).map((m) => [m.name, m]));
    let created = 0;
    let updated = 0;
    let unchanged = 0;
    for (const found of report) {
      const existing = known.get(found.name);
      const kernel = found.kernel ?? existing?.kernel ?? null;
      const check = checkOsSupport({ os: found.os, kernel });
      if (!existing) {
        await this.repos.machines.create({
          configServerId: serverId,
          name: found.name,
          privateIp: found.privateIp,
          os: found.os,
          kernel,
          discovered: true,
          supported: check.supported,
          supportReason: check.reason,
        });
        created++;
        continue;
      }
      const patch = { privateIp: found.privateIp, os: found.os, kernel, discovered: true, supported: check.supported, supportReason: check.reason };
      if ((Object.keys(patch) as (keyof typeof patch)[]).every((k) => existing[k] === patch[k])) {
        unchanged++;
        continue;
      }
      await this.repos.machines.update(existing.id, patch);
      updated++;
    }
    return { created, updated, unchanged };
  }

  /**
   * Asks the configuration server to re-run discovery: `lastRefreshAt` is the time
   * of the request, and the request stays pending (settings
   * `refresh-requested:<serverId>`) until a heartbeat brings a discovery report;
   * until then every heartbeat answer says `refreshRequested: true`.
   */
  refresh(serverId: string): Promise<ConfigServer> {
    const atIso = this.now().toISOString();
    return this.repos.db.transaction(async () => {
      const server = await this.repos.configServers.update(serverId, { lastRefreshAt: atIso });
      await this.repos.settings.set(refreshKey(serverId), atIso);
      return server;
    });
  }


  async getServer(id: string): Promise<ConfigServer> {
    return this.withPending(await this.repos.configServers.get(id));
  }

  async serversPage(page: { limit: number; after?: string }): Promise<{ items: ConfigServer[]; nextCursor: string | null }> {
    const found = await this.repos.configServers.page({}, page);
    return { ...found, items: found.items.map((s) => this.withPending(s)) };
  }

  async processServersPage(page: { limit: number; after?: string }): Promise<{ items: ProcessServer[]; nextCursor: string | null }> {
    const found = await this.repos.processServers.page({}, page);
    return { ...found, items: found.items.map((p) => this.withPendingProcess(p)) };
  }

  private withPending(server: ConfigServer): ConfigServer {
    const pending = this.pendingServers.get(server.id);
    return pending ? { ...server, ...pending } : server;
  }

  private withPendingProcess(p: ProcessServer): ProcessServer {
    const pending = this.pendingProcess.get(p.id);
    return pending ? { ...p, ...pending } : p;
  }

  /**
   * A heartbeat that only refreshes times, versions and process-server figures:
   * buffered, answered from the buffered view. Undefined when it must be written
   * at once (it names a process server that has no row yet).
   */
  private async bufferedHeartbeat(serverId: string, input: HeartbeatInput, atIso: string, clockSkewMs: number): Promise<HeartbeatResult | undefined> {
    const current = this.withPending(await this.repos.configServers.get(serverId));
    const existing = (await this.repos.processServers.list({ configServerId: serverId })).map((p) => this.withPendingProcess(p));
    const reports = input.processServers ?? [];
    if (reports.some((r) => !existing.some((p) => p.name === r.name))) return undefined;
    let worst: ServerHealth = Math.abs(clockSkewMs) > MAX_CLOCK_SKEW_MS ? 'warning' : 'healthy';
    for (const report of reports) {
      const full = report.spoolLimitBytes > 0 && report.spoolUsedBytes > report.spoolLimitBytes * SPOOL_WARNING_RATIO;
      const health: ServerHealth = full ? 'warning' : 'healthy';
      if (health === 'warning') worst = 'warning';
      const id = (existing.find((p) => p.name === report.name) as ProcessServer).id;
      this.pendingProcess.set(id, { ...this.pendingProcess.get(id), ...report, version: input.version, lastHeartbeatAt: atIso, health });
    }
    const patch: Partial<ConfigServer> = { version: input.version, lastHeartbeatAt: atIso, health: worst };
    this.pendingServers.set(serverId, { ...this.pendingServers.get(serverId), ...patch });
    return {
      server: { ...current, ...patch },
      processServers: existing.map((p) => this.withPendingProcess(p)),
      clockSkewMs,
      refreshRequested: (await this.repos.settings.get(refreshKey(serverId))) !== undefined,
    };
  }

  /** Writes the buffered heartbeats in one transaction (servers deleted meanwhile are skipped). */
  async flushHeartbeats(): Promise<void> {
    if (this.pendingServers.size === 0 && this.pendingProcess.size === 0) return;
    const servers = [...this.pendingServers];
    const processes = [...this.pendingProcess];
    this.pendingServers.clear();
    this.pendingProcess.clear();
    await this.repos.db.transaction(async () => {
      for (const [id, patch] of servers) if (await this.repos.configServers.find(id)) await this.repos.configServers.update(id, patch);
      for (const [id, patch] of processes) if (await this.repos.processServers.find(id)) await this.repos.processServers.update(id, patch);
    });
  }
}

/**
 * What the schema cannot say about a discovery report: every IP is an address,
 * and no name appears twice (matching is by name). All failures at once, as the
 * schema validation reports them.
 */
function checkDiscovered(report: readonly DiscoveredMachine[]): void {
  const errors: { in: 'body'; field: string; message: string }[] = [];
  if (report.length > MAX_DISCOVERED_MACHINES) {
    errors.push({ in: 'body', field: '/discovered', message: `must not have more than ${MAX_DISCOVERED_MACHINES} items` });
  }
  const seen = new Set<string>();
  report.forEach((m, i) => {
    if (isIP(m.privateIp) === 0) errors.push({ in: 'body', field: `/discovered/${i}/privateIp`, message: 'must be an IPv4 or IPv6 address' });
    if (seen.has(m.name)) errors.push({ in: 'body', field: `/discovered/${i}/name`, message: `duplicate machine name '${m.name}' in the report` });
    seen.add(m.name);
  });
  if (errors.length > 0) {
    throw new LifeboatError('VALIDATION', `the discovery report is not valid: ${errors.length} problem(s), first: ${errors[0]?.field} ${errors[0]?.message}`, {
      details: { errors: errors.slice(0, 100) },
    });
  }
}

function invalidKey(reason: string): LifeboatError {
  return new LifeboatError('REGISTRATION_KEY_INVALID', `the registration key is not valid: ${reason}`, { details: { reason } });
}

/** The vault a key claims to be for, read before its signature can be checked (with that vault's secret). */
function claimedVault(text: string): string {
  const parts = typeof text === 'string' ? text.trim().split('.') : [];
  if (parts.length !== 3 || parts[0] !== REGISTRATION_KEY_PREFIX) throw invalidKey('malformed');
  try {
    const payload = JSON.parse(Buffer.from(parts[1] ?? '', 'base64url').toString('utf8')) as { vaultId?: unknown };
    if (typeof payload.vaultId === 'string' && /^[0-9A-Za-z_-]{1,64}$/.test(payload.vaultId)) return payload.vaultId;
  } catch {
    // falls through to "malformed": the signature check would refuse it anyway
  }
  throw invalidKey('malformed');
}

function parseClock(text: string): Date {
  const ms = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(text) || Number.isNaN(ms)) {
    throw new LifeboatError('VALIDATION', 'clock must be an ISO-8601 time such as 2026-11-01T12:00:00.000Z', {
      details: { errors: [{ in: 'body', field: '/clock', message: 'must be an ISO-8601 time' }] },
    });
  }
  return new Date(ms);
}

function hostOf(address: string): string {
  const bracketed = /^\[([^\]]+)\](:\d+)?$/.exec(address);
  if (bracketed) return `[${bracketed[1]}]`;
  const parts = address.split(':');
  return parts.length === 2 ? (parts[0] as string) : parts.length > 2 ? `[${address}]` : address;
}
