import { createHash, randomBytes } from 'node:crypto';
import { LifeboatError } from '../../core/errors.js';
import type { ApiToken, ReplicationPolicy, Role, User, Vault } from '../../core/model.js';
import { validatePolicy } from '../../core/policy.js';
import type { Repositories } from '../db/repositories/index.js';
import type { Page, PageRequest, PolicyInput, PolicyPatch, PolicyService, TokenService, UserService } from '../http/services.js';
import type { VaultInput, VaultService } from '../http/routes/vaults.js';
import type { VaultStores } from './vault-stores.js';
import { paginate } from '../http/paging.js';

/**
 * The API's services on the vault database. A token secret is `lbt_` and 32
 * random bytes; only its SHA-256 is stored, and a lookup is by that hash.
 */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export class DbUsers implements UserService {
  constructor(private readonly repos: Repositories) {}

  async list(page: PageRequest): Promise<Page<User>> {
    return paginate(await this.repos.users.list(), page);
  }

  get(id: string): Promise<User> {
    return this.repos.users.get(id);
  }

  create(input: { name: string; role: Role }): Promise<User> {
    return this.repos.users.create(input);
  }
}

export class DbTokens implements TokenService {
  constructor(
    private readonly repos: Repositories,
    private readonly now: () => Date,
  ) {}

  listForUser(userId: string): Promise<readonly ApiToken[]> {
    return this.repos.apiTokens.list({ userId });
  }

  get(id: string): Promise<ApiToken> {
    return this.repos.apiTokens.get(id);
  }

  async create(input: { userId: string; name: string; expiresAt: string | null }): Promise<{ token: ApiToken; secret: string }> {
    await this.repos.users.get(input.userId);
    const secret = `lbt_${randomBytes(32).toString('base64url')}`;
    const token = await this.repos.apiTokens.create({ userId: input.userId, name: input.name, secretHash: sha256Hex(secret), expiresAt: input.expiresAt });
    return { token, secret };
  }

  async revoke(id: string): Promise<void> {
    await this.repos.apiTokens.update(id, { revoked: true });
  }

  async verify(secret: string): Promise<{ token: ApiToken; user: User } | undefined> {
    if (!/^lbt_[A-Za-z0-9_-]{20,100}$/.test(secret)) return undefined;
    const token = await this.repos.apiTokens.findBySecretHash(sha256Hex(secret));
    if (!token || token.revoked) return undefined;
    if (token.expiresAt !== null && Date.parse(token.expiresAt) <= this.now().getTime()) return undefined;
    const user = await this.repos.users.find(token.userId);
    if (!user || user.disabled) return undefined;
    return { token, user };
  }
}

function settingsOf(p: PolicyInput | ReplicationPolicy): Record<string, unknown> {
  const { vaultId: _vaultId, ...rest } = p;
  const { id: _id, createdAt: _createdAt, ...settings } = rest as Record<string, unknown>;
  return settings;
}

export class DbPolicies implements PolicyService {
  constructor(private readonly repos: Repositories) {}

  async list(page: PageRequest): Promise<Page<ReplicationPolicy>> {
    return paginate(await this.repos.policies.list(), page);
  }

  get(id: string): Promise<ReplicationPolicy> {
    return this.repos.policies.get(id);
  }

  async create(input: PolicyInput): Promise<ReplicationPolicy> {
    const settings = validatePolicy(settingsOf(input));
    await this.repos.vaults.get(input.vaultId);
    return this.repos.policies.create({ vaultId: input.vaultId, ...settings });
  }

  async update(id: string, patch: PolicyPatch): Promise<ReplicationPolicy> {
    const current = await this.repos.policies.get(id);
    const settings = validatePolicy(settingsOf({ ...current, ...patch }));
    return this.repos.policies.update(id, settings);
  }
}


export class DbVaults implements VaultService {
  constructor(
    private readonly repos: Repositories,
    /** Given, vaults may be created with a store passphrase (replication needs one). */
    private readonly stores?: VaultStores,
  ) {}

  async list(page: PageRequest): Promise<Page<Vault>> {
    return paginate(await this.repos.vaults.list(), page);
  }

  get(id: string): Promise<Vault> {
    return this.repos.vaults.get(id);
  }

  /**
   * With `storePassphrase`, the store at storeUrl is initialised first (or, already
   * there, must open with it), then the vault row and its sealed passphrase are written
   * in one transaction. The answer carries the store's recovery key when this call
   * created the store: shown once, never kept.
   */
  async create(input: VaultInput): Promise<Vault & { storeRecoveryKey?: string }> {
    checkStoreUrlHasNoSecret(input.storeUrl);
    const { storePassphrase, ...fields } = input;
    if (storePassphrase === undefined) return this.repos.vaults.create(fields);
    const stores = this.stores;
    if (!stores) throw new LifeboatError('CONFIG_INVALID', 'this vault server does not keep store passphrases');
    if (await this.repos.vaults.findByName(fields.name)) {
      throw new LifeboatError('CONFLICT', `vault: a vault named ${fields.name} already exists`, { retryable: false, details: { name: fields.name } });
    }
    const { recoveryKey } = await stores.prepareStore(fields.storeUrl, storePassphrase);
    const vault = await this.repos.db.transaction(async () => {
      const created = await this.repos.vaults.create(fields);
      await stores.remember(created.id, storePassphrase);
      return created;
    });
    return recoveryKey === undefined ? vault : { ...vault, storeRecoveryKey: recoveryKey };
  }
}

/**
 * Store URLs are shown by the API and kept in the database in clear, so they
 * must not carry credentials: those come from the vault's environment
 * (AZURE_STORAGE_*, AWS_*), as for the CLI.
 */
export function checkStoreUrlHasNoSecret(storeUrl: string): void {
  let url: URL;
  try {
    url = new URL(storeUrl);
  } catch {
    throw new LifeboatError('VALIDATION', 'storeUrl is not a URL', { details: { errors: [{ field: '/storeUrl', message: 'not a URL' }] } });
  }
  const params = [...url.searchParams.keys()].map((k) => k.toLowerCase());
  if (url.username || url.password || params.some((k) => ['sig', 'sv', 'se', 'sp', 'accountkey', 'secret', 'token', 'password', 'x-amz-signature', 'x-amz-credential'].includes(k))) {
    throw new LifeboatError('VALIDATION', 'storeUrl must not carry credentials; give them to the vault through its environment', {
      details: { errors: [{ field: '/storeUrl', message: 'credentials in the URL are refused' }] },
    });
  }
}
