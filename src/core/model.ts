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
  /**
   * What the agent does (docs/recovery.md): `replicate` its disks to the process server;
   * `fenced`: stop shipping (the item failed over: this source is no longer the writer,
   * and its generation is refused anyway); `reverse`: its disks are the target of
   * reverse replication (reprotect), pulled from the vault. Absent means `replicate`.
   */
  readonly mode?: AgentMode;
  /** Asks the agent to run its shutdown command once (failover: "Shut down the source machine"); the id is echoed in its heartbeat. */
  readonly shutdownRequest?: { readonly id: string } | null;
  /** Asks the agent to run its start command once (failback: "Start the primary machine"). */
  readonly startRequest?: { readonly id: string } | null;
  /**
   * In `reverse` mode: the reverse session the vault runs (a new id each reprotect), and
   * whether it wants the agent's digests (posted once per session and request).
   */
  readonly reverse?: AgentReverseRequest | null;
}

export interface AgentReverseRequest {
  readonly session: string;
  /** Post the digests of every disk (SHA-256 per 64 KiB block) under this id; a new id asks again. */
  readonly digestsWanted: string | null;
}

/** What the agent did with a shutdown or start request (heartbeat). */
export interface AgentCommandResult {
  readonly id: string;
  readonly ok: boolean;
  readonly error: string | null;
}

export type AgentMode = 'replicate' | 'fenced' | 'reverse';

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
  | 'failback'
  | 'change-recovery-point'
  /** A recovery plan's operation: its steps are built from the plan's groups (src/core/jobs.ts). */
  | 'recovery-plan';
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

export type AlertKind =
  | 'rpo-threshold-exceeded'
  | 'heartbeat-lost'
  | 'job-failed'
  | 'registration-key-expiring'
  | 'spool-filling'
  | 'journal-gap'
  /** A scheduled drill of an item or a plan failed (subject: the item or plan id); the next passing drill clears it. */
  | 'drill-failed';
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

/**
 * Which recovery point a test failover, failover or change of point uses (seed step 6):
 * - `latest-processed`: the newest point already made (fast);
 * - `latest-app-consistent`: the newest app-consistent point;
 * - `latest`: process every segment already at the process server and the store first,
 *   then the newest point (lowest RPO, slower);
 * - `point`: one point by id (of any of the item's disks: the others use their newest
 *   point captured at or before it);
 * - `time`: per disk the newest point captured at or before `at`.
 */
export type PointChoice =
  | { readonly kind: 'latest-processed' }
  | { readonly kind: 'latest-app-consistent' }
  | { readonly kind: 'latest' }
  | { readonly kind: 'point'; readonly pointId: string }
  | { readonly kind: 'time'; readonly at: string };

/** The points an operation used: one per disk of the item. */
export interface ChosenPoint {
  readonly choice: PointChoice;
  readonly disks: readonly {
    readonly disk: string;
    readonly pointId: string;
    readonly capturedAt: string;
    readonly consistency: 'crash' | 'app';
  }[];
}

/** An operator-defined check run against a recovered machine (drill reports). */
export type Probe =
  | { readonly name: string; readonly kind: 'tcp'; readonly port: number; readonly timeoutSeconds: number }
  | { readonly name: string; readonly kind: 'command'; readonly command: string; readonly timeoutSeconds: number; readonly expectOutput?: string };

export interface ProbeResult {
  readonly name: string;
  readonly kind: Probe['kind'];
  readonly ok: boolean;
  /** What was seen: "port 22 answered", the command's exit code and the tail of its output... */
  readonly detail: string;
  readonly durationMs: number;
}

/**
 * How an item or plan is drilled: the checks, what on the console says the machine
 * booted, and an optional schedule the vault runs unattended in the isolated network.
 */
export interface DrillSettings {
  /** The item or plan id. */
  readonly id: string;
  readonly subjectKind: 'item' | 'plan';
  readonly probes: readonly Probe[];
  /** A regular expression: a console line matching it means "booted" (RTO is measured to it); null: booted when every probe passed. */
  readonly bootMarker: string | null;
  /** Seconds to wait for the boot marker and the probes; default 600. */
  readonly bootTimeoutSeconds: number;
  /** Unattended drills every this many hours (168 = weekly); null = none. */
  readonly scheduleEveryHours: number | null;
  readonly nextRunAt: string | null;
  readonly lastRunAt: string | null;
  readonly updatedAt: string;
}

export type DrillTrigger = 'operator' | 'schedule' | 'plan';

/** What a test failover (or failover) showed: kept after its cleanup. */
export interface DrillReport {
  readonly id: string;
  readonly itemId: string;
  /** The plan whose operation ran this drill, if any. */
  readonly planId: string | null;
  readonly operation: 'test-failover' | 'failover';
  readonly trigger: DrillTrigger;
  readonly jobId: string;
  readonly cleanupJobId: string | null;
  readonly outcome: 'running' | 'passed' | 'failed';
  readonly point: ChosenPoint | null;
  /** Job start − the point's capture time (the data a disaster at that moment would lose). */
  readonly rpoSeconds: number | null;
  /** Job start → boot marker (or all probes passing): the recovery time. */
  readonly rtoSeconds: number | null;
  readonly driver: string;
  readonly network: string;
  readonly machineId: string | null;
  readonly accel: 'kvm' | 'tcg' | null;
  readonly probes: readonly ProbeResult[];
  /** The console's tail (at most 64 KiB) as the cleanup found it. */
  readonly consoleLog: string;
  /** Why the drill failed, when it did. */
  readonly error: string | null;
  readonly notes: string | null;
  readonly startedAt: string;
  readonly endedAt: string | null;
}

/** An item's newest drill report and newest passed one (`GET /api/v1/drill-summary`). */
export interface DrillSummary {
  readonly itemId: string;
  readonly latest: DrillReport | null;
  readonly lastPassed: DrillReport | null;
}

/** A machine a compute driver made for an item (test failover or failover). */
export interface RecoveredMachine {
  readonly id: string;
  readonly itemId: string;
  readonly purpose: 'test' | 'failover';
  readonly driver: string;
  readonly point: ChosenPoint;
  readonly network: string;
  readonly state: 'creating' | 'running' | 'stopped' | 'deleting';
  readonly jobId: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** One group of a recovery plan: its items fail over in parallel, groups in order. */
export interface RecoveryPlanGroup {
  readonly name: string;
  readonly itemIds: readonly string[];
  /** Scripts (names of executables in the vault's scripts directory) run before and after the group. */
  readonly preScripts: readonly string[];
  readonly postScripts: readonly string[];
  /** Manual actions after the group: each pauses the plan until an operator acknowledges it. */
  readonly manualActions: readonly string[];
}

export interface RecoveryPlan {
  readonly id: string;
  readonly vaultId: string;
  readonly name: string;
  readonly description: string;
  readonly groups: readonly RecoveryPlanGroup[];
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** One recovery point of one of an item's disks (`GET /api/v1/items/:id/points`). */
export interface ItemPoint {
  readonly pointId: string;
  /** The store disk, `<itemId>.<diskName>` (as in ChosenPoint and `lifeboat point list`). */
  readonly disk: string;
  /** When the source disk was in this state (the cut's capture time). */
  readonly capturedAt: string;
  readonly consistency: 'crash' | 'app';
  readonly sizeBytes: number;
  /** The source generation the point was written under. */
  readonly generation: number;
}

/** An item's points, newest first, and per disk its newest point and its newest app-consistent point. */
export interface ItemPoints {
  readonly items: readonly ItemPoint[];
  readonly latestProcessed: readonly ItemPoint[];
  readonly latestAppConsistent: readonly ItemPoint[];
}

/** An item's RPO over time (`GET /api/v1/items/:id/rpo-history`): samples oldest first. */
export interface RpoHistory {
  readonly itemId: string;
  readonly thresholdSeconds: number;
  readonly samples: readonly { readonly at: string; readonly rpoSeconds: number }[];
}
