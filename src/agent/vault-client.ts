import { LifeboatError } from '../core/errors.js';
import { vaultBaseUrl, vaultJson } from '../protocol/vault-api.js';
import type { AgentCommandResult, AgentMode } from '../core/model.js';
import { parseAgentConfig, type AgentConfig, type ProcessServerAddress } from './config.js';

/** The agent's side of the two agent routes of the vault (docs/replication.md, "Identity, enrollment"). */
export interface EnrollRequest {
  readonly itemId: string;
  readonly token: string;
  readonly csrPem: string;
  readonly hostname: string;
  readonly disks: readonly { readonly name: string; readonly sizeBytes: number; readonly tracker: string }[];
}

export interface EnrollResponse {
  readonly machineId: string;
  readonly itemId: string;
  readonly credential: string;
  readonly certificatePem: string;
  readonly caPem: string;
  readonly processServer: ProcessServerAddress;
  readonly config: AgentConfig;
}

export type DiskReportState = 'initial' | 'resync' | 'continuous' | 'paused' | 'error';

export interface DiskReport {
  readonly name: string;
  readonly sizeBytes: number;
  readonly state: DiskReportState;
  readonly initialPercent: number;
  readonly ackedSequence: number;
  readonly lagMs: number;
  readonly lastError: string | null;
}

export interface HeartbeatReport {
  readonly disks: readonly DiskReport[];
  readonly version: string;
  /** The mode the agent obeys now (it follows the vault's at its own pace: a session ends first). */
  readonly mode?: AgentMode;
  /** The outcome of the last shutdown / start request it ran (docs/recovery.md). */
  readonly shutdown?: AgentCommandResult | null;
  readonly start?: AgentCommandResult | null;
  /** In reverse mode: the session, the last sequence written and acknowledged, and the bytes written in it. */
  readonly reverse?: { readonly session: string; readonly lastSequence: number; readonly bytesWritten: number } | null;
}

/**
 * What the agent needs from the vault. Errors are LifeboatErrors: an unreachable
 * vault is SERVER_UNREACHABLE (retryable; the agent keeps its last config), a
 * refused credential UNAUTHENTICATED, anything else the vault's own code.
 */
export interface VaultClient {
  enroll(request: EnrollRequest): Promise<EnrollResponse>;
  heartbeat(credential: string, report: HeartbeatReport): Promise<AgentConfig>;
  /** Reverse replication (docs/recovery.md); a client without them cannot be a reverse target. */
  reverseDigests?(credential: string, piece: ReverseDigestsPiece): Promise<void>;
  reverseBatch?(credential: string, request: { session: string; maxBytes: number }): Promise<ReverseBatch>;
  reverseAck?(credential: string, ack: { session: string; sequence: number; bytes: number }): Promise<void>;
}

/** Part of one disk's digests: SHA-256 per 64 KiB block from `firstBlock`, base64. */
export interface ReverseDigestsPiece {
  readonly session: string;
  /** The vault's request id (AgentConfig.reverse.digestsWanted). */
  readonly request: string;
  readonly disk: string;
  readonly sizeBytes: number;
  readonly firstBlock: number;
  readonly digests: string;
  /** The disk's last piece. */
  readonly last: boolean;
}

/** Blocks to write, in sequence order; empty when the vault has nothing queued. */
export interface ReverseBatch {
  readonly session: string;
  readonly blocks: readonly { readonly sequence: number; readonly disk: string; readonly offset: number; readonly data: string }[];
}

export interface HttpVaultClientOptions {
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
}

/** VaultClient over HTTP(S) with fetch. Never puts the token or credential in an error message. */
export class HttpVaultClient implements VaultClient {
  private readonly base: string;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(vaultUrl: string, options: HttpVaultClientOptions = {}) {
    this.base = vaultBaseUrl(vaultUrl);
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.fetchImpl = options.fetch ?? fetch;
  }

  async enroll(request: EnrollRequest): Promise<EnrollResponse> {
    const raw = (await this.post('/api/v1/agents/enroll', request)) as Record<string, unknown>;
    const need = (k: string): string => {
      if (typeof raw[k] !== 'string' || raw[k] === '') throw new LifeboatError('API_ERROR', `the vault's enrollment answer lacks ${k}`);
      return raw[k] as string;
    };
    const config = parseAgentConfig(raw.config);
    return {
      machineId: need('machineId'),
      itemId: need('itemId'),
      credential: need('credential'),
      certificatePem: need('certificatePem'),
      caPem: need('caPem'),
      processServer: (raw.processServer as ProcessServerAddress | undefined) ?? config.processServer,
      config,
    };
  }

  async heartbeat(credential: string, report: HeartbeatReport): Promise<AgentConfig> {
    return parseAgentConfig(await this.post('/api/v1/agents/self/heartbeat', report, credential));
  }

  async reverseDigests(credential: string, piece: ReverseDigestsPiece): Promise<void> {
    await this.post('/api/v1/agents/self/reverse/digests', piece, credential);
  }

  async reverseBatch(credential: string, request: { session: string; maxBytes: number }): Promise<ReverseBatch> {
    const raw = (await this.post('/api/v1/agents/self/reverse/batch', request, credential)) as Partial<ReverseBatch>;
    if (typeof raw.session !== 'string' || !Array.isArray(raw.blocks)) throw new LifeboatError('API_ERROR', "the vault's reverse batch is malformed");
    return raw as ReverseBatch;
  }

  async reverseAck(credential: string, ack: { session: string; sequence: number; bytes: number }): Promise<void> {
    await this.post('/api/v1/agents/self/reverse/ack', ack, credential);
  }

  private post(path: string, body: unknown, bearer?: string): Promise<unknown> {
    return vaultJson({ base: this.base, method: 'POST', path, body, ...(bearer ? { bearer } : {}), timeoutMs: this.timeoutMs, fetchImpl: this.fetchImpl });
  }
}
