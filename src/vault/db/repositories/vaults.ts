import type { RegistrationKey, Vault } from '../../../core/model.js';
import { Repository, type RepoContext } from './base.js';

export class VaultRepository extends Repository<Vault> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'vaults',
      noun: 'vault',
      columns: { id: 'text', name: 'text', location: 'text', storeUrl: 'text', recoveryNetwork: 'text', createdAt: 'text' },
    });
  }

  /** CONFLICT when the name is taken. */
  create(input: Omit<Vault, 'id' | 'createdAt' | 'recoveryNetwork'> & { recoveryNetwork?: string | null }): Promise<Vault> {
    return this.table.insert({
      id: this.ctx.newId(),
      name: input.name,
      location: input.location,
      storeUrl: input.storeUrl,
      recoveryNetwork: input.recoveryNetwork ?? null,
      createdAt: this.nowIso(),
    });
  }

  async findByName(name: string): Promise<Vault | undefined> {
    return (await this.table.list({ name }))[0];
  }

  list(): Promise<Vault[]> {
    return this.table.list();
  }

  update(id: string, patch: Partial<Pick<Vault, 'name' | 'location' | 'storeUrl' | 'recoveryNetwork'>>): Promise<Vault> {
    return this.table.update(id, patch);
  }
}

/**
 * Registration keys. The key handed to the operator is a secret; only its hash
 * is stored (`secret_hash`, not part of the model), so a forged key finds nothing.
 */
export class RegistrationKeyRepository extends Repository<RegistrationKey> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'registration_keys',
      noun: 'registration key',
      columns: { id: 'text', vaultId: 'text', createdAt: 'text', expiresAt: 'text', revoked: 'bool' },
    });
  }

  /** NOT_FOUND for an unknown vault. */
  create(input: { vaultId: string; expiresAt: string; secretHash: string }): Promise<RegistrationKey> {
    return this.table.insert(
      { id: this.ctx.newId(), vaultId: input.vaultId, createdAt: this.nowIso(), expiresAt: input.expiresAt, revoked: false },
      { secret_hash: input.secretHash },
    );
  }

  /** The key whose secret hashes to `secretHash`, whether expired or revoked (the caller decides). */
  async findBySecretHash(secretHash: string): Promise<RegistrationKey | undefined> {
    return (await this.table.list({}, { extraWhere: 'secret_hash = ?', extraParams: [secretHash] }))[0];
  }

  list(filter: { vaultId?: string; revoked?: boolean } = {}): Promise<RegistrationKey[]> {
    return this.table.list(filter);
  }

  /** Revoking twice is fine; NOT_FOUND for an unknown key. */
  revoke(id: string): Promise<RegistrationKey> {
    return this.table.update(id, { revoked: true });
  }
}
