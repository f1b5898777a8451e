import { createHash, randomBytes } from 'node:crypto';
import { LifeboatError } from '../../../core/errors.js';
import type { ApiToken, ReplicationPolicy, Role, User } from '../../../core/model.js';
import { TimeIdSequence } from '../../../format/ids.js';
import { validatePolicy } from '../../../core/policy.js';
import { paginate } from '../paging.js';
import type { Page, PageRequest, PolicyInput, PolicyPatch, PolicyService, TokenService, UserService } from '../services.js';

/** In-memory services: real fakes for tests and for the framework's examples (no persistence). */

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export class MemoryUsers implements UserService {
  readonly byId = new Map<string, User>();
  constructor(
    private readonly now: () => Date,
    private readonly ids = new TimeIdSequence(),
  ) {}

  async list(page: PageRequest): Promise<Page<User>> {
    return paginate(this.byId.values(), page);
  }

  async get(id: string): Promise<User> {
    const user = this.byId.get(id);
    if (!user) throw new LifeboatError('NOT_FOUND', `no user ${id}`);
    return user;
  }

  async create(input: { name: string; role: Role }): Promise<User> {
    if ([...this.byId.values()].some((u) => u.name === input.name)) throw new LifeboatError('CONFLICT', `a user named ${input.name} exists`, { retryable: false });
    const user: User = { id: this.ids.next(this.now()), name: input.name, role: input.role, createdAt: this.now().toISOString(), disabled: false };
    this.byId.set(user.id, user);
    return user;
  }
}

export class MemoryTokens implements TokenService {
  readonly byId = new Map<string, ApiToken>();
  constructor(
    private readonly users: UserService,
    private readonly now: () => Date,
    private readonly ids = new TimeIdSequence(),
  ) {}

  async listForUser(userId: string): Promise<readonly ApiToken[]> {
    return [...this.byId.values()].filter((t) => t.userId === userId);
  }

  async get(id: string): Promise<ApiToken> {
    const token = this.byId.get(id);
    if (!token) throw new LifeboatError('NOT_FOUND', `no token ${id}`);
    return token;
  }

  async create(input: { userId: string; name: string; expiresAt: string | null }): Promise<{ token: ApiToken; secret: string }> {
    await this.users.get(input.userId);
    const id = this.ids.next(this.now());
    // The id is part of the secret so a lookup needs no scan; the random part is what authenticates.
    const secret = `lbt_${id}_${randomBytes(24).toString('base64url')}`;
    const token: ApiToken = {
      id,
      userId: input.userId,
      name: input.name,
      secretHash: sha256Hex(secret),
      createdAt: this.now().toISOString(),
      expiresAt: input.expiresAt,
      lastUsedAt: null,
      revoked: false,
    };
    this.byId.set(id, token);
    return { token, secret };
  }

  async revoke(id: string): Promise<void> {
    const token = await this.get(id);
    this.byId.set(id, { ...token, revoked: true });
  }

  async verify(secret: string): Promise<{ token: ApiToken; user: User } | undefined> {
    const id = /^lbt_([0-9A-Z]{26})_/.exec(secret)?.[1];
    const token = id === undefined ? undefined : this.byId.get(id);
    if (!token || token.revoked || token.secretHash !== sha256Hex(secret)) return undefined;
    if (token.expiresAt !== null && Date.parse(token.expiresAt) <= this.now().getTime()) return undefined;
    const user = await this.users.get(token.userId).catch(() => undefined);
    if (!user || user.disabled) return undefined;
    const used = { ...token, lastUsedAt: this.now().toISOString() };
    this.byId.set(id as string, used);
    return { token: used, user };
  }
}

function withoutVault(p: PolicyInput | ReplicationPolicy): Record<string, unknown> {
  const { vaultId: _vaultId, ...rest } = p;
  const { id: _id, createdAt: _createdAt, ...settings } = rest as Record<string, unknown>;
  return settings;
}

export class MemoryPolicies implements PolicyService {
  readonly byId = new Map<string, ReplicationPolicy>();
  constructor(
    private readonly now: () => Date,
    private readonly ids = new TimeIdSequence(),
  ) {}

  async list(page: PageRequest): Promise<Page<ReplicationPolicy>> {
    return paginate(this.byId.values(), page);
  }

  async get(id: string): Promise<ReplicationPolicy> {
    const policy = this.byId.get(id);
    if (!policy) throw new LifeboatError('NOT_FOUND', `no replication policy ${id}`);
    return policy;
  }

  async create(input: PolicyInput): Promise<ReplicationPolicy> {
    const settings = validatePolicy(withoutVault(input));
    this.checkNameFree(input.vaultId, settings.name, undefined);
    const policy: ReplicationPolicy = { id: this.ids.next(this.now()), vaultId: input.vaultId, createdAt: this.now().toISOString(), ...settings };
    this.byId.set(policy.id, policy);
    return policy;
  }

  async update(id: string, patch: PolicyPatch): Promise<ReplicationPolicy> {
    const current = await this.get(id);
    const settings = validatePolicy(withoutVault({ ...current, ...patch }));
    const next: ReplicationPolicy = { ...current, ...settings };
    this.checkNameFree(next.vaultId, next.name, id);
    this.byId.set(id, next);
    return next;
  }

  private checkNameFree(vaultId: string, name: string, self: string | undefined): void {
    for (const p of this.byId.values())
      if (p.vaultId === vaultId && p.name === name && p.id !== self)
        throw new LifeboatError('CONFLICT', `vault ${vaultId} already has a policy named ${name}`, { retryable: false });
  }
}
