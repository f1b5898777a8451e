import { LifeboatError, isLifeboatError } from '../core/errors.js';
import { vaultBaseUrl, vaultJson } from '../protocol/vault-api.js';
import { openStorage } from '../storage/registry.js';
import { Repository } from '../store/repository.js';
import { silentLogger, type AgentGrant, type ProcessServerBackend, type ProcessServerLogger } from './backend.js';

/**
 * A standalone process server's side of the vault's process-server routes
 * (docs/replication.md, "Standalone process server"), authenticated with the
 * configuration server's credential. Errors are LifeboatErrors: an unreachable vault
 * (or a 5xx) is SERVER_UNREACHABLE (retryable), a refusal the vault's own code.
 * The credential never appears in an error message.
 */
export class VaultProcessServerApi {
  private readonly base: string;

  constructor(
    vaultUrl: string,
    private readonly credential: string,
    private readonly timeoutMs = 15_000,
  ) {
    this.base = vaultBaseUrl(vaultUrl);
  }

  register(input: { name: string; address: string; port: number; csrPem: string; sans?: readonly string[]; version?: string }): Promise<{ id: string; certificatePem: string; caPem: string }> {
    return this.call('POST', '/api/v1/process-servers', input) as Promise<{ id: string; certificatePem: string; caPem: string }>;
  }

  authorize(processServerId: string, input: { machineId: string; certificateSerial: string }): Promise<AgentGrant> {
    return this.call('POST', `/api/v1/process-servers/${encodeURIComponent(processServerId)}/authorize`, input) as Promise<AgentGrant>;
  }

  async heartbeat(processServerId: string, stats: Record<string, number>, version?: string): Promise<void> {
    await this.call('POST', `/api/v1/process-servers/${encodeURIComponent(processServerId)}/heartbeat`, { stats, ...(version ? { version } : {}) });
  }

  async storeUrl(processServerId: string, vaultId: string): Promise<string> {
    const answer = (await this.call('GET', `/api/v1/process-servers/${encodeURIComponent(processServerId)}/vaults/${encodeURIComponent(vaultId)}/store`)) as { storeUrl?: unknown };
    if (typeof answer.storeUrl !== 'string' || answer.storeUrl === '') throw new LifeboatError('API_ERROR', 'the vault named no store URL');
    return answer.storeUrl;
  }

  private call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    return vaultJson({ base: this.base, method, path, body, bearer: this.credential, timeoutMs: this.timeoutMs });
  }
}

export interface HttpBackendOptions {
  readonly api: Pick<VaultProcessServerApi, 'authorize' | 'storeUrl'>;
  /** This process server's id (POST /api/v1/process-servers). */
  readonly processServerId: string;
  /** The stores' passphrase, given by the operator (the vault never hands it out). */
  readonly passphrase: string;
  /** A grant is used without asking again for this long (default 10 s): a revocation takes effect within it. */
  readonly grantTtlMs?: number;
  /**
   * When the vault does not answer (SERVER_UNREACHABLE), a grant up to this old is used
   * still (default 5 min), so a vault restart does not stop agents that reconnect. A
   * refusal from the vault is never overridden.
   */
  readonly graceMs?: number;
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly now?: () => number;
  readonly logger?: ProcessServerLogger;
}

/**
 * The ProcessServerBackend of a standalone process server: authorize() asks the vault
 * over its REST API (cached briefly), repository() opens the store at the URL the vault
 * names with the operator's passphrase (opened once per vault and kept).
 */
export class HttpBackend implements ProcessServerBackend {
  private readonly grants = new Map<string, { grant: AgentGrant; atMs: number }>();
  private readonly repos = new Map<string, Promise<Repository>>();
  private readonly ttlMs: number;
  private readonly graceMs: number;
  private readonly now: () => number;
  private readonly logger: ProcessServerLogger;

  constructor(private readonly o: HttpBackendOptions) {
    this.ttlMs = o.grantTtlMs ?? 10_000;
    this.graceMs = o.graceMs ?? 5 * 60_000;
    this.now = o.now ?? Date.now;
    this.logger = o.logger ?? silentLogger;
  }

  async authorize(input: { machineId: string; certificateSerial: string }): Promise<AgentGrant> {
    const key = `${input.machineId}/${input.certificateSerial}`;
    const cached = this.grants.get(key);
    const at = this.now();
    if (cached && at - cached.atMs < this.ttlMs) return cached.grant;
    try {
      const grant = await this.o.api.authorize(this.o.processServerId, input);
      this.grants.set(key, { grant, atMs: at });
      return grant;
    } catch (err) {
      if (isLifeboatError(err, 'SERVER_UNREACHABLE') && cached && at - cached.atMs < this.graceMs) {
        this.logger.warn({ machineId: input.machineId, ageMs: at - cached.atMs, err: (err as Error).message }, 'vault unreachable: agent admitted on its last grant');
        return cached.grant;
      }
      this.grants.delete(key);
      throw err;
    }
  }

  repository(vaultId: string): Promise<Repository> {
    const cached = this.repos.get(vaultId);
    if (cached) return cached;
    const opening = (async () => {
      const url = await this.o.api.storeUrl(this.o.processServerId, vaultId);
      const storage = await openStorage(url, this.o.env ? { env: this.o.env } : {});
      try {
        return await Repository.open(storage, this.o.passphrase);
      } catch (err) {
        await storage.close().catch(() => undefined);
        throw err;
      }
    })();
    this.repos.set(vaultId, opening);
    opening.catch(() => this.repos.delete(vaultId));
    return opening;
  }

  /** Closes the opened stores' storage. */
  async close(): Promise<void> {
    const opened = [...this.repos.values()];
    this.repos.clear();
    for (const p of opened) {
      const repo = await p.catch(() => undefined);
      await repo?.storage.close().catch(() => undefined);
    }
  }
}
