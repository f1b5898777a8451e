import { createHash, randomBytes } from 'node:crypto';
import { LifeboatError } from '../../core/errors.js';
import type { ApiToken, ItemPoints, ReplicationPolicy, Role, User, Vault } from '../../core/model.js';
import { validatePolicy } from '../../core/policy.js';
import type { Repositories } from '../db/repositories/index.js';
import type { Page, PageRequest, PolicyInput, PolicyPatch, PolicyService, TokenService, UserService } from '../http/services.js';
import type { VaultInput, VaultService } from '../http/routes/vaults.js';
import type { VaultStores } from './vault-stores.js';
import { paginate } from '../http/paging.js';
import type { SessionService } from '../http/routes/sessions.js';
import type { ItemPointsService } from '../http/routes/points.js';
import { ManifestCache, listItemPoints } from '../recovery/points.js';
import { DEFAULT_PASSWORD_COST, SignInAttempts, checkPasswordLength, hashPassword, verifyPassword, type PasswordCost } from './passwords.js';

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

/** How long a portal session token lives. */
export const SESSION_HOURS = 12;
/** The name of every session token starts so (token names are unique per user, so each adds its start and a random tag). */
export const SESSION_TOKEN_PREFIX = 'portal session ';

/**
 * Sign-in with a user name and password, sessions (ordinary API tokens named
 * `portal session …` that expire in 12 hours) and passwords. Every failed sign-in is
 * the same UNAUTHENTICATED with the same message, and costs one scrypt whatever the
 * reason (an unknown name is checked against a hash of nothing), so neither the answer
 * nor its time tells which names exist.
 */
export class DbSessions implements SessionService {
  private dummyHash: Promise<string> | undefined;

  constructor(
    private readonly repos: Repositories,
    private readonly tokens: DbTokens,
    private readonly now: () => Date,
    private readonly attempts: SignInAttempts = new SignInAttempts(now),
    private readonly cost: PasswordCost = DEFAULT_PASSWORD_COST,
  ) {}

  async signIn(name: string, password: string): Promise<User> {
    this.attempts.check(name);
    const user = await this.repos.users.findByName(name);
    const stored = user ? await this.repos.users.passwordHash(user.id) : null;
    const matches = await verifyPassword(stored ?? (await this.dummy()), password);
    if (!user || user.disabled || stored === null || !matches) {
      this.attempts.failed(name);
      throw new LifeboatError('UNAUTHENTICATED', 'the user name or the password is wrong');
    }
    this.attempts.succeeded(name);
    return user;
  }

  async startSession(userId: string): Promise<{ token: string; expiresAt: string }> {
    const at = this.now();
    const expiresAt = new Date(at.getTime() + SESSION_HOURS * 3_600_000).toISOString();
    const name = `${SESSION_TOKEN_PREFIX}${at.toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '')}-${randomBytes(3).toString('hex')}`;
    const { secret } = await this.tokens.create({ userId, name, expiresAt });
    return { token: secret, expiresAt };
  }

  /** Revokes the session token `tokenId`; CONFLICT for an API token that is not a portal session (those are revoked with DELETE /api/v1/tokens/:id). */
  async endSession(tokenId: string): Promise<void> {
    const token = await this.tokens.get(tokenId);
    if (!token.name.startsWith(SESSION_TOKEN_PREFIX)) {
      throw new LifeboatError('CONFLICT', `token ${token.name} is an API token, not a portal session: revoke it with DELETE /api/v1/tokens/${token.id}`, {
        details: { token: token.id },
      });
    }
    await this.tokens.revoke(token.id);
  }

  async setPassword(userId: string, password: string): Promise<void> {
    checkPasswordLength(password, '/password');
    await this.repos.users.get(userId);
    await this.repos.users.setPasswordHash(userId, await hashPassword(password, this.cost));
  }

  /**
   * The current password must match (VALIDATION on /currentPassword otherwise, counted
   * like a failed sign-in of the user's name, so a stolen token cannot guess it).
   */
  async changeOwnPassword(userId: string, currentPassword: string, password: string): Promise<void> {
    checkPasswordLength(password, '/password');
    const user = await this.repos.users.get(userId);
    this.attempts.check(user.name);
    const stored = await this.repos.users.passwordHash(userId);
    if (stored === null) {
      throw new LifeboatError('VALIDATION', `user ${user.name} has no password yet; a user manager sets the first one (lifeboat user set-password ${user.name})`, {
        details: { errors: [{ field: '/currentPassword', message: 'there is no current password' }] },
      });
    }
    if (!(await verifyPassword(stored, currentPassword))) {
      this.attempts.failed(user.name);
      throw new LifeboatError('VALIDATION', 'the current password is wrong', { details: { errors: [{ field: '/currentPassword', message: 'is wrong' }] } });
    }
    await this.setPassword(userId, password);
  }

  private dummy(): Promise<string> {
    this.dummyHash ??= hashPassword(randomBytes(16).toString('hex'), this.cost);
    return this.dummyHash;
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

/** An item's points, read from its vault's store (src/vault/recovery/points.ts listItemPoints). */
export class DbItemPoints implements ItemPointsService {
  /** The vault's stores are opened once (VaultStores), and so are the manifests read for this route. */
  private readonly manifests = new ManifestCache();

  constructor(
    private readonly repos: Repositories,
    private readonly stores: VaultStores,
  ) {}

  async points(itemId: string, limit: number): Promise<ItemPoints> {
    const item = await this.repos.items.get(itemId);
    return listItemPoints(() => this.stores.openVaultStore(item.vaultId), item, limit, this.manifests);
  }
}
