import type { Agent, AgentDiskStatus, ReplicationControl } from '../../../core/model.js';
import { Repository, type RepoContext } from './base.js';

export interface EnrollmentToken {
  readonly id: string;
  readonly itemId: string;
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly usedAt: string | null;
}

/**
 * One-time enrollment tokens. Only the SHA-256 of the token text is stored
 * (`secret_hash`, not part of the model); `use` is a compare-and-set, so a token
 * enrolls one agent even when two requests race with it.
 */
export class EnrollmentTokenRepository extends Repository<EnrollmentToken> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'enrollment_tokens',
      noun: 'enrollment token',
      columns: { id: 'text', itemId: 'text', createdAt: 'text', expiresAt: 'text', usedAt: 'text' },
    });
  }

  create(input: { itemId: string; expiresAt: string; secretHash: string }): Promise<EnrollmentToken> {
    return this.table.insert(
      { id: this.ctx.newId(), itemId: input.itemId, createdAt: this.nowIso(), expiresAt: input.expiresAt, usedAt: null },
      { secret_hash: input.secretHash },
    );
  }

  async findBySecretHash(secretHash: string): Promise<EnrollmentToken | undefined> {
    return (await this.table.list({}, { extraWhere: 'secret_hash = ?', extraParams: [secretHash] }))[0];
  }

  /** Marks the token used; false when it already was (a replay, or another request won). */
  use(id: string): Promise<boolean> {
    return this.table.updateWhere(id, { usedAt: this.nowIso() }, { sql: 'used_at IS NULL', params: [] });
  }

  list(filter: { itemId?: string } = {}): Promise<EnrollmentToken[]> {
    return this.table.list(filter);
  }
}

/** Agents: one per item, with the hash of its bearer credential (`credential_hash`, not part of the model). */
export class AgentRepository extends Repository<Agent> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'agents',
      noun: 'agent',
      columns: {
        id: 'text',
        itemId: 'text',
        machineId: 'text',
        hostname: 'text',
        version: 'text',
        certificateSerial: 'text',
        certificateNotAfter: 'text',
        enrolledAt: 'text',
        lastHeartbeatAt: 'text',
        disks: 'json',
      },
    });
  }

  /**
   * Creates the item's agent or replaces the one it had (re-enrollment): new id,
   * certificate and credential, so the old serial and credential stop working at once.
   */
  async enroll(input: Pick<Agent, 'itemId' | 'machineId' | 'hostname' | 'certificateSerial' | 'certificateNotAfter' | 'disks'> & { credentialHash: string }): Promise<Agent> {
    await this.ctx.db.run('DELETE FROM agents WHERE item_id = ? OR machine_id = ?', [input.itemId, input.machineId]);
    const { credentialHash, ...fields } = input;
    return this.table.insert(
      { id: this.ctx.newId(), ...fields, version: null, enrolledAt: this.nowIso(), lastHeartbeatAt: null },
      { credential_hash: credentialHash },
    );
  }

  async findByCredentialHash(credentialHash: string): Promise<Agent | undefined> {
    return (await this.table.list({}, { extraWhere: 'credential_hash = ?', extraParams: [credentialHash] }))[0];
  }

  async findByItem(itemId: string): Promise<Agent | undefined> {
    return (await this.table.list({ itemId }))[0];
  }

  async findByMachine(machineId: string): Promise<Agent | undefined> {
    return (await this.table.list({ machineId }))[0];
  }

  list(filter: { itemId?: string } = {}): Promise<Agent[]> {
    return this.table.list(filter);
  }

  heartbeat(id: string, patch: { version: string; lastHeartbeatAt: string; disks: readonly AgentDiskStatus[] }): Promise<Agent> {
    return this.table.update(id, patch);
  }
}

/** Pause and throttle per item; an item without a row replicates unpaused and unthrottled. */
export class ReplicationControlRepository {
  constructor(private readonly ctx: RepoContext) {}

  async get(itemId: string): Promise<ReplicationControl> {
    const row = await this.ctx.db.one<{ paused: number; throttle_bytes_per_sec: number }>(
      'SELECT paused, throttle_bytes_per_sec FROM replication_controls WHERE id = ?',
      [itemId],
    );
    return { itemId, paused: row ? Number(row.paused) !== 0 : false, throttleBytesPerSec: row ? Number(row.throttle_bytes_per_sec) : 0 };
  }

  async set(itemId: string, patch: Partial<Omit<ReplicationControl, 'itemId'>>): Promise<ReplicationControl> {
    const current = await this.get(itemId);
    const next = { ...current, ...patch };
    await this.ctx.db.run(
      'INSERT INTO replication_controls (id, paused, throttle_bytes_per_sec) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET paused = excluded.paused, throttle_bytes_per_sec = excluded.throttle_bytes_per_sec',
      [itemId, next.paused ? 1 : 0, next.throttleBytesPerSec],
    );
    return next;
  }
}
