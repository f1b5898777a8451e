import { isIP } from 'node:net';
import { LifeboatError } from '../../core/errors.js';
import type { ConfigServer, ProcessServer, ServerHealth } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';
import type { VaultCa } from '../pki/ca.js';
import type { AgentService, ProcessServerEndpoint } from './agents.js';
import type { ProcessServerFigures } from './built-in-process-server.js';
import { BUILT_IN_PROCESS_SERVER } from './registration.js';

/**
 * Standalone process servers (`lifeboat process-server run`, docs/replication.md
 * "Standalone process server"): registered by a configuration server with its own
 * credential, they scale the built-in one out. Every call is limited to the calling
 * configuration server's vault and its own process servers; another server's (or an
 * unknown) process server is NOT_FOUND, so a caller learns nothing about the rest.
 *
 * A standalone process server is a row of `process_servers` (address `host:port`, as
 * the built-in rows) plus its endpoint in the settings (`process-server-endpoint:<id>`):
 * that record is what marks it standalone, and what an item's agent is told to dial
 * when the item names it (`processServerId`). Its private key never reaches the vault:
 * it sends a CSR and gets a serverAuth certificate from the vault CA.
 */

const endpointKey = (id: string): string => `process-server-endpoint:${id}`;
const MAX_SANS = 16;

export interface StandaloneEndpoint extends ProcessServerEndpoint {
  /** Serial of the certificate last issued to it (lower-case hex). */
  readonly certificateSerial: string;
}

export interface RegisterProcessServerInput {
  readonly name: string;
  /** The host agents dial (a SAN of its certificate). */
  readonly address: string;
  readonly port: number;
  readonly csrPem: string;
  /** More names or addresses for the certificate. */
  readonly sans?: readonly string[];
  readonly version?: string;
}

export interface RegisteredProcessServer {
  readonly id: string;
  readonly certificatePem: string;
  readonly caPem: string;
}

/** What a standalone process server reports every few seconds: the same figures as the built-in one. */
export type StandaloneStats = ProcessServerFigures;

export type AgentGrantAnswer = Awaited<ReturnType<AgentService['authorize']>>;

export class StandaloneProcessServers {
  /** The last report per process server: throughput is the bytes received since. */
  private readonly last = new Map<string, { bytesIn: number; atMs: number }>();

  constructor(
    private readonly repos: Repositories,
    private readonly ca: () => Promise<VaultCa>,
    private readonly agents: Pick<AgentService, 'authorize'>,
    private readonly now: () => Date,
  ) {}

  /**
   * Registers (or, for a name the configuration server already uses, re-registers) a
   * standalone process server and signs its CSR. Re-registering replaces the
   * certificate and the endpoint. CONFLICT for the name of the built-in process server.
   */
  async register(configServerId: string, input: RegisterProcessServerInput): Promise<RegisteredProcessServer> {
    const server = await this.repos.configServers.get(configServerId);
    if (input.name === BUILT_IN_PROCESS_SERVER) {
      throw new LifeboatError('CONFLICT', `'${BUILT_IN_PROCESS_SERVER}' names the configuration server's built-in process server; choose another name`, {
        details: { name: input.name },
      });
    }
    const sans = [...new Set([input.address, ...(input.sans ?? [])])];
    if (sans.length > MAX_SANS) throw validation('/sans', `at most ${MAX_SANS} names`);
    const ca = await this.ca();
    const cert = await ca.signProcessServerCsr(input.csrPem, sans);
    const address = `${isIP(input.address) === 6 ? `[${input.address}]` : input.address}:${input.port}`;
    // TLS server names (SNI) are host names: with an IP address to dial, a DNS name of the certificate is checked instead.
    const serverName = sans.find((s) => isIP(s.replace(/^\[|\]$/g, '')) === 0) ?? input.address;
    const endpoint: StandaloneEndpoint = { host: input.address, port: input.port, serverName, certificateSerial: cert.serial };
    const id = await this.repos.db.transaction(async () => {
      const existing = (await this.repos.processServers.list({ configServerId: server.id })).find((p) => p.name === input.name);
      const row =
        existing ??
        (await this.repos.processServers.create({ configServerId: server.id, name: input.name, address, version: input.version ?? server.version }));
      if (existing) await this.repos.processServers.update(existing.id, { address, ...(input.version ? { version: input.version } : {}) });
      await this.repos.settings.set(endpointKey(row.id), endpoint);
      return row.id;
    });
    return { id, certificatePem: cert.certPem, caPem: ca.caPem };
  }

  /**
   * The built-in authorization (AgentService.authorize), limited to the configuration
   * server's vault: an agent of another vault is AGENT_UNAUTHORIZED as an unknown one is.
   */
  async authorize(configServerId: string, processServerId: string, input: { machineId: string; certificateSerial: string }): Promise<AgentGrantAnswer> {
    const { server } = await this.own(configServerId, processServerId);
    const grant = await this.agents.authorize(input);
    if (grant.vaultId !== server.vaultId) {
      throw new LifeboatError('AGENT_UNAUTHORIZED', `machine ${input.machineId} has no enrolled agent with that certificate`, { details: { machineId: input.machineId } });
    }
    return grant;
  }

  /** Records a report: spool, throughput (since the last report), health, heartbeat time. */
  async heartbeat(configServerId: string, processServerId: string, stats: StandaloneStats, version?: string): Promise<ProcessServer> {
    await this.own(configServerId, processServerId);
    const at = this.now();
    const atMs = at.getTime();
    const previous = this.last.get(processServerId);
    const seconds = previous ? (atMs - previous.atMs) / 1000 : 0;
    const throughputBytesPerSec = previous && seconds > 0 ? Math.max(0, Math.round((stats.bytesIn - previous.bytesIn) / seconds)) : 0;
    this.last.set(processServerId, { bytesIn: stats.bytesIn, atMs });
    const ratio = stats.spoolLimitBytes > 0 ? stats.spoolUsedBytes / stats.spoolLimitBytes : 0;
    const health: ServerHealth = ratio >= 0.95 ? 'critical' : ratio >= 0.8 ? 'warning' : 'healthy';
    return this.repos.processServers.update(processServerId, {
      lastHeartbeatAt: at.toISOString(),
      health,
      spoolUsedBytes: stats.spoolUsedBytes,
      spoolLimitBytes: stats.spoolLimitBytes,
      throughputBytesPerSec,
      ...(version ? { version } : {}),
    });
  }

  /** Where the store of the configuration server's vault is; never its passphrase. */
  async storeOf(configServerId: string, processServerId: string, vaultId: string): Promise<{ storeUrl: string }> {
    const { server } = await this.own(configServerId, processServerId);
    if (vaultId !== server.vaultId) throw new LifeboatError('NOT_FOUND', `no vault ${vaultId} for this configuration server`, { details: { vaultId } });
    return { storeUrl: (await this.repos.vaults.get(vaultId)).storeUrl };
  }

  /** The endpoint agents dial for a standalone process server; undefined for any other (built-in, unknown). */
  async endpointOf(processServerId: string): Promise<ProcessServerEndpoint | undefined> {
    const found = await this.repos.settings.get<StandaloneEndpoint>(endpointKey(processServerId));
    return found && { host: found.host, port: found.port, serverName: found.serverName };
  }

  /** The configuration server and one of its standalone process servers; NOT_FOUND otherwise. */
  private async own(configServerId: string, processServerId: string): Promise<{ server: ConfigServer; processServer: ProcessServer }> {
    const server = await this.repos.configServers.get(configServerId);
    const processServer = await this.repos.processServers.find(processServerId);
    if (!processServer || processServer.configServerId !== server.id || !(await this.repos.settings.get(endpointKey(processServerId)))) {
      throw new LifeboatError('NOT_FOUND', `configuration server ${server.name} has no standalone process server ${processServerId}`, {
        details: { processServerId },
      });
    }
    return { server, processServer };
  }
}

function validation(field: string, message: string): LifeboatError {
  return new LifeboatError('VALIDATION', `${field} ${message}`, { details: { errors: [{ in: 'body', field, message }] } });
}

