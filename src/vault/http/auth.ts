import type { FastifyInstance, FastifyRequest } from 'fastify';
import { LifeboatError } from '../../core/errors.js';
import { requirePermission, roleAllows } from './permissions.js';
import type { ApiDeps, Caller, LifeboatRouteConfig, Principal } from './types.js';

const BEARER = /^Bearer ([\x21-\x7e]{1,1024})$/i;

/**
 * Authentication on every route that is not marked public (including unknown
 * paths, so a caller without credentials learns nothing about which routes exist),
 * then authorization against the route's declared permission, then the audit record
 * of every mutating request: "denied" before anything is parsed, "allowed" after
 * validation and before the handler runs.
 */
export function installAuth(app: FastifyInstance, deps: ApiDeps): void {
  app.decorateRequest('principal', null);

  app.addHook('onRequest', async (request) => {
    const config = request.routeOptions.config as LifeboatRouteConfig;
    if (config.public) return;
    const principal = await authenticate(request, deps);
    request.principal = principal;
    const route = config.lifeboat;
    if (!route) return; // unknown path or method: the not-found handler answers
    try {
      checkCaller(principal, route.caller ?? 'user', route.id);
    } catch (err) {
      if (route.mutating) await audit(deps, request, principal, route.id, 'denied');
      throw err;
    }
    if (roleAllows(principal.role, route.permission)) return;
    if (route.mutating) await audit(deps, request, principal, route.id, 'denied');
    requirePermission(principal, route.permission); // throws FORBIDDEN naming the role and the permission
  });

  app.addHook('preHandler', async (request) => {
    const route = (request.routeOptions.config as LifeboatRouteConfig).lifeboat;
    if (!route?.mutating || !request.principal) return;
    await audit(deps, request, request.principal, route.id, 'allowed');
  });
}

/**
 * Server credentials open server routes only, agent credentials agent routes only, and
 * user credentials neither: a stolen server or agent credential cannot read or change
 * configuration, and a user token cannot pose as a server or an agent. FORBIDDEN naming
 * both sides otherwise.
 */
export function checkCaller(principal: Principal, caller: Caller, routeId: string): void {
  const kind: Caller = principal.kind === 'server' ? 'server' : principal.kind === 'agent' ? 'agent' : 'user';
  if (kind === caller) return;
  const who = caller === 'server' ? 'registered servers' : caller === 'agent' ? 'enrolled agents' : 'users';
  throw new LifeboatError('FORBIDDEN', `${principal.kind} ${principal.id} may not call ${routeId}: it is for ${who} only`, {
    details: { principal: `${principal.kind}:${principal.id}`, route: routeId, caller },
  });
}

async function authenticate(request: FastifyRequest, deps: ApiDeps): Promise<Principal> {
  const header = request.headers.authorization;
  const match = typeof header === 'string' ? BEARER.exec(header) : null;
  if (!match) throw new LifeboatError('UNAUTHENTICATED', 'send an API token as "Authorization: Bearer TOKEN"');
  const principal = await deps.authenticate(match[1] as string);
  if (!principal) throw new LifeboatError('UNAUTHENTICATED', 'the token is unknown, expired or revoked');
  return principal;
}

async function audit(deps: ApiDeps, request: FastifyRequest, principal: Principal, action: string, outcome: 'allowed' | 'denied'): Promise<void> {
  const params = request.params as Record<string, unknown> | null;
  const target = params && typeof params.id === 'string' ? params.id : null;
  await deps.audit({ at: deps.now().toISOString(), actor: principal.id, action, target, outcome, requestId: request.id });
}
