import type { ServerHealth } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';
import type { AgentService } from './agents.js';
import type { VaultStores } from './vault-stores.js';

/**
 * The process server that runs inside `lifeboat server` (src/process-server, wired by
 * src/cli/commands/server.ts): the vault is its backend, and its figures are recorded
 * like any process server's.
 *
 * The database keeps process servers under a configuration server (and those under a
 * vault), so the built-in one is recorded, for every vault, under a configuration server
 * named `lifeboat-server` (the vault itself), created on first report and remembered in
 * the settings (`built-in-config-server:<vaultId>`). Each report refreshes both rows'
 * heartbeat, so neither raises heartbeat-lost while the vault runs; the spool figures
 * feed the spool-filling alert.
 */

export const BUILT_IN_CONFIG_SERVER_NAME = 'lifeboat-server';
export const BUILT_IN_PROCESS_SERVER_NAME = 'built-in';
const settingKey = (vaultId: string) => `built-in-config-server:${vaultId}`;

/** The figures of the running process server (src/process-server stats(), structurally). */
export interface ProcessServerFigures {
  readonly bytesIn: number;
  readonly segmentsIn: number;
  readonly segmentsUploaded: number;
  readonly spoolUsedBytes: number;
  readonly spoolLimitBytes: number;
  readonly spooledSegments: number;
  readonly uploadLagMs: number;
  readonly connectedAgents: number;
  readonly uploadErrors: number;
}

/**
 * The process server's backend, in the vault process (docs/replication.md): the same
 * shape as src/process-server's ProcessServerBackend, which the vault may not import.
 */
export class VaultProcessServerBackend {
  constructor(
    private readonly agents: Pick<AgentService, 'authorize'>,
    private readonly stores: Pick<VaultStores, 'openVaultStore'>,
  ) {}

  /** AGENT_UNAUTHORIZED unless the serial is the machine's current certificate and its item replicates. */
  authorize(input: { machineId: string; certificateSerial: string }): ReturnType<AgentService['authorize']> {
    return this.agents.authorize(input);
  }

  repository(vaultId: string): ReturnType<VaultStores['openVaultStore']> {
    return this.stores.openVaultStore(vaultId);
  }
}

export class BuiltInProcessServerReporter {
  private last: { figures: ProcessServerFigures; atMs: number; throughputBytesPerSec: number } | undefined;

  constructor(
    private readonly repos: Repositories,
    private readonly now: () => Date,
    private readonly version: string,
  ) {}

  /** Records the figures (throughput from the bytes received since the last report) on every vault's built-in rows. */
  async report(figures: ProcessServerFigures, address: string): Promise<void> {
    const atMs = this.now().getTime();
    const previous = this.last;
    const seconds = previous ? (atMs - previous.atMs) / 1000 : 0;
    const throughputBytesPerSec = previous && seconds > 0 ? Math.max(0, Math.round((figures.bytesIn - previous.figures.bytesIn) / seconds)) : 0;
    this.last = { figures, atMs, throughputBytesPerSec };
    const at = new Date(atMs).toISOString();
    const ratio = figures.spoolLimitBytes > 0 ? figures.spoolUsedBytes / figures.spoolLimitBytes : 0;
    const health: ServerHealth = ratio >= 0.95 ? 'critical' : ratio >= 0.8 ? 'warning' : 'healthy';
    for (const vault of await this.repos.vaults.list()) {
      const { configServerId, processServerId } = await this.rows(vault.id, address);
      await this.repos.db.transaction(async () => {
        await this.repos.configServers.update(configServerId, { version: this.version, lastHeartbeatAt: at, health });
        await this.repos.processServers.update(processServerId, {
          address,
          version: this.version,
          lastHeartbeatAt: at,
          health,
          spoolUsedBytes: figures.spoolUsedBytes,
          spoolLimitBytes: figures.spoolLimitBytes,
          throughputBytesPerSec,
        });
      });
    }
  }

  /** Prometheus text of the last report (empty before the first). */
  metrics(): string {
    const last = this.last;
    if (!last) return '';
    const f = last.figures;
    const gauge = (name: string, help: string, value: number, type = 'gauge'): string[] => [
      `# HELP lifeboat_process_server_${name} ${help}`,
      `# TYPE lifeboat_process_server_${name} ${type}`,
      `lifeboat_process_server_${name} ${value}`,
    ];
    return [
      ...gauge('bytes_in_total', 'Segment bytes received from agents.', f.bytesIn, 'counter'),
      ...gauge('segments_in_total', 'Segments acknowledged to agents.', f.segmentsIn, 'counter'),
      ...gauge('segments_uploaded_total', 'Segments moved from the spool into a store.', f.segmentsUploaded, 'counter'),
      ...gauge('upload_errors_total', 'Failed uploads (retried).', f.uploadErrors, 'counter'),
      ...gauge('spool_used_bytes', 'Bytes in the spool.', f.spoolUsedBytes),
      ...gauge('spool_limit_bytes', 'Spool size limit.', f.spoolLimitBytes),
      ...gauge('spooled_segments', 'Segments in the spool, not yet in the store.', f.spooledSegments),
      ...gauge('upload_lag_seconds', 'Age of the oldest spooled segment.', f.uploadLagMs / 1000),
      ...gauge('connected_agents', 'Agents connected now.', f.connectedAgents),
      ...gauge('throughput_bytes_per_second', 'Bytes received per second over the last report interval.', last.throughputBytesPerSec),
      '',
    ].join('\n');
  }

  private async rows(vaultId: string, address: string): Promise<{ configServerId: string; processServerId: string }> {
    const remembered = await this.repos.settings.get<{ configServerId: string; processServerId: string }>(settingKey(vaultId));
    if (remembered && (await this.repos.configServers.find(remembered.configServerId)) && (await this.repos.processServers.find(remembered.processServerId))) {
      return remembered;
    }
    return this.repos.db.transaction(async () => {
      const existing = (await this.repos.configServers.list({ vaultId })).find((c) => c.name === BUILT_IN_CONFIG_SERVER_NAME);
      const config =
        existing ?? (await this.repos.configServers.create({ vaultId, name: BUILT_IN_CONFIG_SERVER_NAME, address, version: this.version }));
      const ps =
        (await this.repos.processServers.list({ configServerId: config.id })).find((p) => p.name === BUILT_IN_PROCESS_SERVER_NAME) ??
        (await this.repos.processServers.create({ configServerId: config.id, name: BUILT_IN_PROCESS_SERVER_NAME, address, version: this.version }));
      const rows = { configServerId: config.id, processServerId: ps.id };
      await this.repos.settings.set(settingKey(vaultId), rows);
      return rows;
    });
  }
}
