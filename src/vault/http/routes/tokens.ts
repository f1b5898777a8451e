import { LifeboatError } from '../../../core/errors.js';
import { roleAllows } from '../permissions.js';
import { route } from '../route.js';
import type { TokenService } from '../services.js';
import type { Principal, RouteModule } from '../types.js';
import { idString, nameString, nullableTimestamp, object, timestamp } from './schemas.js';

/** The public view of a token: never the secret, never its hash. */
export const tokenSchema = object({
  id: idString,
  userId: idString,
  name: nameString,
  createdAt: timestamp,
  expiresAt: nullableTimestamp,
  lastUsedAt: nullableTimestamp,
  revoked: { type: 'boolean' },
});

function userOf(principal: Principal): string {
  const userId = principal.kind === 'user' ? principal.id : principal.userId;
  if (userId === undefined) throw new LifeboatError('FORBIDDEN', `a ${principal.kind} principal has no user to own tokens`);
  return userId;
}

/**
 * API tokens of the calling user. Any authenticated user may list, create and revoke
 * their own tokens (`read`); revoking another user's token needs `manage-users`
 * (without it, another user's token is NOT_FOUND, so ids are not probed).
 */
export function tokensRoutes(tokens: TokenService, now: () => Date): RouteModule {
  return {
    name: 'tokens',
    register(app) {
      route(app, {
        id: 'tokens.list',
        method: 'GET',
        url: '/api/v1/tokens',
        permission: 'read',
        summary: "List the caller's API tokens",
        tags: ['tokens'],
        schema: { response: { 200: object({ items: { type: 'array', items: tokenSchema } }) } },
        handler: async (_req, principal) => ({ items: await tokens.listForUser(userOf(principal)) }),
      });

      route<unknown, unknown, { name: string; expiresInDays?: number }>(app, {
        id: 'tokens.create',
        method: 'POST',
        url: '/api/v1/tokens',
        permission: 'read',
        summary: 'Create an API token for the caller; the secret is in this response only',
        tags: ['tokens'],
        successStatus: 201,
        schema: {
          body: object({ name: nameString, expiresInDays: { type: 'integer', minimum: 1, maximum: 3650 } }, ['name']),
          response: { 201: object({ token: tokenSchema, secret: { type: 'string' } }) },
        },
        handler: async (req, principal) => {
          const days = req.body.expiresInDays;
          const expiresAt = days === undefined ? null : new Date(now().getTime() + days * 86_400_000).toISOString();
          return tokens.create({ userId: userOf(principal), name: req.body.name, expiresAt });
        },
      });

      route<{ id: string }>(app, {
        id: 'tokens.revoke',
        method: 'DELETE',
        url: '/api/v1/tokens/:id',
        permission: 'read',
        summary: 'Revoke an API token',
        tags: ['tokens'],
        successStatus: 204,
        schema: { params: object({ id: idString }) },
        handler: async (req, principal) => {
          const token = await tokens.get(req.params.id);
          if (token.userId !== principal.userId && token.userId !== principal.id && !roleAllows(principal.role, 'manage-users'))
            throw new LifeboatError('NOT_FOUND', `no token ${req.params.id}`);
          await tokens.revoke(token.id);
          return undefined;
        },
      });
    },
  };
}
