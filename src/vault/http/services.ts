import type { ApiToken, ReplicationPolicy, Role, User } from '../../core/model.js';

/**
 * The services the example route modules call. The in-memory implementations in
 * ./memory/ are real fakes for tests; the database-backed ones (src/vault/db)
 * implement the same interfaces. Contract for all: a missing id throws
 * LifeboatError NOT_FOUND; a taken unique name throws CONFLICT (not retryable);
 * rule violations throw VALIDATION with `details.errors` listing the fields.
 */

export interface PageRequest {
  readonly limit: number;
  /** The last id of the previous page; items sort by id (time ids sort by creation). */
  readonly after?: string;
  /** `oldest` (default): ascending ids, `after` = the next newer; `newest`: descending, `after` = the next older. */
  readonly order?: 'oldest' | 'newest';
}

export interface Page<T> {
  readonly items: readonly T[];
  /** Pass as `after` for the next page; null on the last page. */
  readonly nextCursor: string | null;
}

export interface UserService {
  list(page: PageRequest): Promise<Page<User>>;
  get(id: string): Promise<User>;
  create(input: { name: string; role: Role }): Promise<User>;
}

/** Token secrets are returned once by `create` and never stored; only their SHA-256 is. */
export interface TokenService {
  listForUser(userId: string): Promise<readonly ApiToken[]>;
  get(id: string): Promise<ApiToken>;
  create(input: { userId: string; name: string; expiresAt: string | null }): Promise<{ token: ApiToken; secret: string }>;
  revoke(id: string): Promise<void>;
  /** The live (not revoked, not expired) token of a secret, and its user; undefined otherwise. */
  verify(secret: string): Promise<{ token: ApiToken; user: User } | undefined>;
}

type PolicyNumbers = Pick<
  ReplicationPolicy,
  'rpoThresholdSeconds' | 'retentionHours' | 'appConsistentFrequencyMinutes' | 'crashConsistentFrequencySeconds'
>;
/** Numeric settings left out take the defaults of src/core/policy.ts. */
export type PolicyInput = Pick<ReplicationPolicy, 'vaultId' | 'name'> & Partial<PolicyNumbers>;
export type PolicyPatch = Partial<Pick<ReplicationPolicy, 'name'> & PolicyNumbers>;

export interface PolicyService {
  list(page: PageRequest): Promise<Page<ReplicationPolicy>>;
  get(id: string): Promise<ReplicationPolicy>;
  create(input: PolicyInput): Promise<ReplicationPolicy>;
  update(id: string, patch: PolicyPatch): Promise<ReplicationPolicy>;
}
