/**
 * The control plane's resources, as the vault stores them and the REST API
 * shows them (names follow the seed: vault, configuration server, process
 * server, replication policy, replicated item, job, alert). Pure types: the
 * database layer (src/vault/db) persists exactly these shapes, the HTTP layer
 * (src/vault/http) validates and returns them. Times are ISO-8601 UTC strings;
 * ids are time ids (src/format/ids.ts) unless stated.
 */

export type Role = 'owner' | 'contributor' | 'operator' | 'reader';
export const ROLES: readonly Role[] = ['owner', 'contributor', 'operator', 'reader'];

export interface User {
  readonly id: string;
  readonly name: string;
  readonly role: Role;
  readonly createdAt: string;
  readonly disabled: boolean;
}

/** An API token. The secret is shown once at creation; only its hash is stored. */
export interface ApiToken {
  readonly id: string;
  readonly userId: string;
  readonly name: string;
  /** hex SHA-256 of the secret part; never the secret itself. */
  readonly secretHash: string;
  readonly createdAt: string;
  readonly expiresAt: string | null;
  readonly lastUsedAt: string | null;
  readonly revoked: boolean;
}

export interface Vault {
  readonly id: string;
  readonly name: string;
  readonly location: string;
  /** Target store URL (file://, azblob://, s3://), credentials never inside. */
  readonly storeUrl: string;
  readonly recoveryNetwork: string | null;
  readonly createdAt: string;
}

/** A registration key: valid 5 days, one purpose (registering configuration servers of one vault). */
export interface RegistrationKey {
  readonly id: string;
  readonly vaultId: string;
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly revoked: boolean;
}

export type ServerHealth = 'healthy' | 'warning' | 'critical' | 'unknown';

export interface ConfigServer {
  readonly id: string;
  readonly vaultId: string;
  readonly name: string;
  readonly address: string;
  readonly version: string;
  readonly registeredAt: string;
  readonly lastHeartbeatAt: string | null;
  readonly health: ServerHealth;
  readonly lastRefreshAt: string | null;
}

export interface ProcessServer {
  readonly id: string;
  readonly configServerId: string;
  readonly name: string;
  readonly address: string;
  readonly version: string;
  readonly lastHeartbeatAt: string | null;
  readonly health: ServerHealth;
  readonly spoolUsedBytes: number;
  readonly spoolLimitBytes: number;
  readonly throughputBytesPerSec: number;
}

export interface Machine {
  readonly id: string;
  readonly configServerId: string;
  readonly name: string;
  readonly privateIp: string;
  /** e.g. "debian-12", "ubuntu-22.04", "rhel-9". */
  readonly os: string;
  readonly kernel: string | null;
  readonly discovered: boolean;
  readonly supported: boolean | null;
  /** Readable reason when unsupported. */
  readonly supportReason: string | null;
  readonly createdAt: string;
}

/** Credentials for push install; the secret is stored encrypted, never returned by the API. */
export interface PushAccount {
  readonly id: string;
  readonly configServerId: string;
  readonly name: string;
  readonly username: string;
  readonly kind: 'password' | 'key';
  readonly createdAt: string;
}

export interface ReplicationPolicy {
  readonly id: string;
  readonly vaultId: string;
  readonly name: string;
  /** Alert only: raise when the item's RPO exceeds this. */
  readonly rpoThresholdSeconds: number;
  /** How long recovery points are kept. */
  readonly retentionHours: number;
  /** 0 = no app-consistent points. */
  readonly appConsistentFrequencyMinutes: number;
  readonly crashConsistentFrequencySeconds: number;
  readonly createdAt: string;
}

export type ItemState =
  | 'enabling'
  | 'initial-replication'
  | 'protected'
  | 'test-failover'
  | 'test-failover-cleanup'
  | 'failing-over'
  | 'failed-over'
  | 'committed'
  | 'reprotecting'
  | 'reprotected'
  | 'failing-back'
  | 'disabled';

export interface ComputeSettings {
  readonly targetName: string;
  readonly size: string;
  readonly network: string | null;
  readonly subnet: string | null;
  readonly ip: string | null;
}

export interface ReplicatedItem {
  readonly id: string;
  readonly vaultId: string;
  readonly machineId: string;
  readonly policyId: string;
  readonly processServerId: string | null;
  readonly state: ItemState;
  /** 0..100 while initial replication runs. */
  readonly initialReplicationPercent: number;
  readonly rpoSeconds: number | null;
  readonly compute: ComputeSettings;
  readonly disks: readonly { readonly name: string; readonly sizeBytes: number }[];
  /** Source generation: raised on failover so the old source is fenced. */
  readonly generation: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** Where an agent reaches its process server. */
export interface ProcessServerEndpoint {
  readonly host: string;
  readonly port: number;
  /** The name the agent checks the process server's certificate against (a SAN). */
  readonly serverName: string;
}

/** What the vault answers an agent at enrollment and to every heartbeat (docs/replication.md). */
export interface AgentConfig {
  /** The item's generation: a stream of an older one is fenced. */
  readonly generation: number;
  readonly paused: boolean;
  /** 0 = none. */
  readonly throttleBytesPerSec: number;
  readonly crashConsistentFrequencySeconds: number;
  /** 0 = no app-consistent points. */
  readonly appConsistentFrequencyMinutes: number;
  readonly disks: readonly { readonly name: string; readonly storeDisk: string }[];
  readonly processServer: ProcessServerEndpoint;
}

/** How an agent reports one protected disk (docs/replication.md, heartbeat). */
export type AgentDiskState = 'initial' | 'resync' | 'continuous' | 'paused' | 'error';

export interface AgentDiskStatus {
  readonly name: string;
  readonly sizeBytes: number;
  readonly state: AgentDiskState;
  /** 0..100: how much of the disk the initial copy (or resync) has shipped. */
  readonly initialPercent: number;
  readonly ackedSequence: number;
  readonly lagMs: number;
  readonly lastError: string | null;
}

/**
 * The mobility agent of one protected machine, once it enrolled. Its bearer credential
 * and its certificate are not part of the model: the vault keeps the credential's hash
 * and the current certificate's serial (re-enrolling replaces both).
 */
export interface Agent {
  readonly id: string;
  readonly itemId: string;
  readonly machineId: string;
  readonly hostname: string;
  readonly version: string | null;
  readonly certificateSerial: string;
  readonly certificateNotAfter: string;
  readonly enrolledAt: string;
  readonly lastHeartbeatAt: string | null;
  readonly disks: readonly AgentDiskStatus[];
}

/** What the operator sets on a replicating item besides its policy: pause and bandwidth. */
export interface ReplicationControl {
  readonly itemId: string;
  readonly paused: boolean;
  /** 0 = no limit. */
  readonly throttleBytesPerSec: number;
}

export type JobKind =
  | 'enable-protection'
  | 'finalize-protection'
  | 'test-failover'
  | 'cleanup-test-failover'
  | 'failover'
  | 'commit'
  | 'reprotect'
  | 'failback';
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobStep {
  readonly name: string;
  readonly state: JobState;
  readonly progressPercent: number;
  readonly startedAt: string | null;
  readonly endedAt: string | null;
  readonly error: string | null;
}

export interface Job {
  readonly id: string;
  readonly kind: JobKind;
  readonly itemId: string | null;
  readonly state: JobState;
  readonly steps: readonly JobStep[];
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly endedAt: string | null;
  readonly error: string | null;
  /** Who started it (user id or server id). */
  readonly initiator: string;
}

export type AlertKind = 'rpo-threshold-exceeded' | 'heartbeat-lost' | 'job-failed' | 'registration-key-expiring' | 'spool-filling' | 'journal-gap';
export type AlertSeverity = 'warning' | 'critical';

export interface Alert {
  readonly id: string;
  readonly kind: AlertKind;
  readonly severity: AlertSeverity;
  /** What it is about: an item, server, job or key id. */
  readonly subjectId: string;
  readonly message: string;
  readonly raisedAt: string;
  readonly clearedAt: string | null;
}

export interface AuditEntry {
  readonly id: string;
  readonly at: string;
  /** user id, token id or server id. */
  readonly actor: string;
  readonly action: string;
  readonly target: string | null;
  readonly outcome: 'allowed' | 'denied' | 'failed';
  readonly requestId: string | null;
}
