import type { ApiToken, Role, User } from '../../../core/model.js';
import { Repository, type RepoContext } from './base.js';

export class UserRepository extends Repository<User> {
  constructor(ctx: RepoContext) {
    super(ctx, { table: 'users', noun: 'user', columns: { id: 'text', name: 'text', role: 'text', createdAt: 'text', disabled: 'bool' } });
  }

  /** CONFLICT when the name is taken. */
  create(input: { name: string; role: Role }): Promise<User> {
    return this.table.insert({ id: this.ctx.newId(), name: input.name, role: input.role, createdAt: this.nowIso(), disabled: false });
  }

  async findByName(name: string): Promise<User | undefined> {
    return (await this.table.list({ name }))[0];
  }

  list(filter: { role?: Role } = {}): Promise<User[]> {
    return this.table.list(filter);
  }

  update(id: string, patch: Partial<Pick<User, 'name' | 'role' | 'disabled'>>): Promise<User> {
    return this.table.update(id, patch);
  }

  /**
   * The stored password hash (src/vault/services/passwords.ts), null when the user has
   * none. It is not a field of User, so no list, answer or log of users can carry it.
   */
  async passwordHash(id: string): Promise<string | null> {
    const row = await this.ctx.db.one<{ password_hash: string | null }>('SELECT password_hash FROM users WHERE id = ?', [id]);
    if (!row) throw this.table.notFound(id);
    return row.password_hash;
  }

  /** Replaces the password hash (null removes the password); NOT_FOUND for an unknown user. */
  async setPasswordHash(id: string, hash: string | null): Promise<void> {
    const { changes } = await this.ctx.db.run('UPDATE users SET password_hash = ? WHERE id = ?', [hash, id]);
    if (changes === 0) throw this.table.notFound(id);
  }
}

export class ApiTokenRepository extends Repository<ApiToken> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'api_tokens',
      noun: 'API token',
      columns: {
        id: 'text',
        userId: 'text',
        name: 'text',
        secretHash: 'text',
        createdAt: 'text',
        expiresAt: 'text',
        lastUsedAt: 'text',
        revoked: 'bool',
      },
    });
  }

  /** Stores the hash only; NOT_FOUND for an unknown user, CONFLICT for a taken name or hash. */
  create(input: { userId: string; name: string; secretHash: string; expiresAt?: string | null }): Promise<ApiToken> {
    return this.table.insert({
      id: this.ctx.newId(),
      userId: input.userId,
      name: input.name,
      secretHash: input.secretHash,
      createdAt: this.nowIso(),
      expiresAt: input.expiresAt ?? null,
      lastUsedAt: null,
      revoked: false,
    });
  }

  async findBySecretHash(secretHash: string): Promise<ApiToken | undefined> {
    return (await this.table.list({ secretHash }))[0];
  }

  list(filter: { userId?: string } = {}): Promise<ApiToken[]> {
    return this.table.list(filter);
  }

  update(id: string, patch: Partial<Pick<ApiToken, 'name' | 'expiresAt' | 'lastUsedAt' | 'revoked'>>): Promise<ApiToken> {
    return this.table.update(id, patch);
  }
}
