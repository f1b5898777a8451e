import type { FastifyInstance } from 'fastify';
import { ROLES, type Role } from '../../../src/core/model.js';
import { MemoryPolicies, MemoryTokens, MemoryUsers } from '../../../src/vault/http/memory/memory-services.js';
import { policiesRoutes } from '../../../src/vault/http/routes/policies.js';
import { tokensRoutes } from '../../../src/vault/http/routes/tokens.js';
import { usersRoutes } from '../../../src/vault/http/routes/users.js';
import { buildApi } from '../../../src/vault/http/server.js';
import type { AuditRecord, Principal, RouteModule } from '../../../src/vault/http/types.js';

/** A secret that must never reach a response: planted in a failing handler's error. */
export const CANARY = 'lbt_CANARY0000000000000000000000_s3cr3t-canary-value';


export interface Harness {
  app: FastifyInstance;
  audit: AuditRecord[];
  users: MemoryUsers;
  tokens: MemoryTokens;
  policies: MemoryPolicies;
  /** A bearer token for each role: a real token of a user with that role. */
  tokenOf: Record<Role, string>;
  clock: { now: Date };
}

export async function makeApi(options: { extraRoutes?: RouteModule[]; ready?: () => boolean } = {}): Promise<Harness> {
  const clock = { now: new Date('2026-11-01T12:00:00Z') };
  const now = () => clock.now;
  const users = new MemoryUsers(now);
  const tokens = new MemoryTokens(users, now);
  const policies = new MemoryPolicies(now);
  const tokenOf = {} as Record<Role, string>;
  for (const role of ROLES) {
    const user = await users.create({ name: `${role}-user`, role });
    tokenOf[role] = (await tokens.create({ userId: user.id, name: `${role} token`, expiresAt: null })).secret;
  }
  const audit: AuditRecord[] = [];
  const app = await buildApi({
    now,
    authenticate: async (bearer): Promise<Principal | undefined> => {
      const found = await tokens.verify(bearer);
      return found && { kind: 'token', id: found.token.id, role: found.user.role, userId: found.user.id };
    },
    audit: (entry) => {
      audit.push(entry);
    },
    ...(options.ready ? { ready: options.ready } : {}),
    routes: [usersRoutes(users), tokensRoutes(tokens, now), policiesRoutes(policies), ...(options.extraRoutes ?? [])],
  });
  await app.ready();
  return { app, audit, users, tokens, policies, tokenOf, clock };
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

/** A concrete path for a route pattern (":id" -> a well-formed id that does not exist). */
export function concretePath(url: string): string {
  return url.replace(/:[A-Za-z0-9_]+/g, '01JAAAAAAAAAAAAAAAAAAAAAAA');
}
