import type { ConfigServer, ProcessServer } from '../../../core/model.js';
import { Repository, type RepoContext } from './base.js';

/**
 * Configuration servers. Each may hold the hash of the credential it was
 * issued at registration (`credential_hash`, not part of the model).
 */
export class ConfigServerRepository extends Repository<ConfigServer> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'config_servers',
      noun: 'configuration server',
      columns: {
        id: 'text',
        vaultId: 'text',
        name: 'text',
        address: 'text',
        version: 'text',
        registeredAt: 'text',
        lastHeartbeatAt: 'text',
        health: 'text',
        lastRefreshAt: 'text',
      },
    });
  }

  /** CONFLICT when the vault already has a server of that name; NOT_FOUND for an unknown vault. */
  create(input: Pick<ConfigServer, 'vaultId' | 'name' | 'address' | 'version'> & { credentialHash?: string }): Promise<ConfigServer> {
    return this.table.insert(
      {
        id: this.ctx.newId(),
        vaultId: input.vaultId,
        name: input.name,
        address: input.address,
        version: input.version,
        registeredAt: this.nowIso(),
        lastHeartbeatAt: null,
        health: 'unknown',
        lastRefreshAt: null,
      },
      { credential_hash: input.credentialHash ?? null },
    );
  }

  async findByCredentialHash(credentialHash: string): Promise<ConfigServer | undefined> {
    return (await this.table.list({}, { extraWhere: 'credential_hash = ?', extraParams: [credentialHash] }))[0];
  }

  list(filter: { vaultId?: string } = {}): Promise<ConfigServer[]> {
    return this.table.list(filter);
  }

  update(
    id: string,
    patch: Partial<Pick<ConfigServer, 'name' | 'address' | 'version' | 'lastHeartbeatAt' | 'health' | 'lastRefreshAt'>>,
  ): Promise<ConfigServer> {
    return this.table.update(id, patch);
  }
}

export class ProcessServerRepository extends Repository<ProcessServer> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'process_servers',
      noun: 'process server',
      columns: {
        id: 'text',
        configServerId: 'text',
        name: 'text',
        address: 'text',
        version: 'text',
        lastHeartbeatAt: 'text',
        health: 'text',
        spoolUsedBytes: 'int',
        spoolLimitBytes: 'int',
        throughputBytesPerSec: 'int',
      },
    });
  }

  create(
    input: Pick<ProcessServer, 'configServerId' | 'name' | 'address' | 'version'> &
      Partial<Pick<ProcessServer, 'spoolLimitBytes'>> & { credentialHash?: string },
  ): Promise<ProcessServer> {
    return this.table.insert(
      {
        id: this.ctx.newId(),
        configServerId: input.configServerId,
        name: input.name,
        address: input.address,
        version: input.version,
        lastHeartbeatAt: null,
        health: 'unknown',
        spoolUsedBytes: 0,
        spoolLimitBytes: input.spoolLimitBytes ?? 0,
        throughputBytesPerSec: 0,
      },
      { credential_hash: input.credentialHash ?? null },
    );
  }

  async findByCredentialHash(credentialHash: string): Promise<ProcessServer | undefined> {
    return (await this.table.list({}, { extraWhere: 'credential_hash = ?', extraParams: [credentialHash] }))[0];
  }

  list(filter: { configServerId?: string } = {}): Promise<ProcessServer[]> {
    return this.table.list(filter);
  }

  /** Heartbeats land here: one UPDATE of a single row. */
  update(id: string, patch: Partial<Omit<ProcessServer, 'id' | 'configServerId'>>): Promise<ProcessServer> {
    return this.table.update(id, patch);
  }
}
