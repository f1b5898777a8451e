import { ROLES, type Role } from '../../../core/model.js';
import { route } from '../route.js';
import type { UserService } from '../services.js';
import type { RouteModule } from '../types.js';
import { idString, nameString, object, pageOf, pageQuery, timestamp } from './schemas.js';

export const userSchema = object({
  id: idString,
  name: nameString,
  role: { type: 'string', enum: [...ROLES] },
  createdAt: timestamp,
  disabled: { type: 'boolean' },
});

const principalSchema = object(
  { kind: { type: 'string', enum: ['user', 'token', 'server'] }, id: idString, role: { type: 'string', enum: [...ROLES] }, user: { ...userSchema, nullable: true } },
  ['kind', 'id', 'role', 'user'],
);

/** Users and the caller's identity. */
export function usersRoutes(users: UserService): RouteModule {
  return {
    name: 'users',
    register(app) {
      route<unknown, { limit: number; after?: string }>(app, {
        id: 'users.list',
        method: 'GET',
        url: '/api/v1/users',
        permission: 'read',
        summary: 'List users',
        tags: ['users'],
        schema: { querystring: pageQuery, response: { 200: pageOf(userSchema) } },
        handler: async (req) => users.list({ limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}) }),
      });

      route<unknown, unknown, { name: string; role: Role }>(app, {
        id: 'users.create',
        method: 'POST',
        url: '/api/v1/users',
        permission: 'manage-users',
        summary: 'Create a user',
        tags: ['users'],
        successStatus: 201,
        schema: { body: object({ name: nameString, role: { type: 'string', enum: [...ROLES] } }), response: { 201: userSchema } },
        handler: async (req) => users.create(req.body),
      });

      route(app, {
        id: 'me.show',
        method: 'GET',
        url: '/api/v1/me',
        permission: 'read',
        summary: 'Who am I: the calling principal and its user',
        tags: ['users'],
        schema: { response: { 200: principalSchema } },
        handler: async (_req, principal) => {
          const userId = principal.kind === 'user' ? principal.id : principal.userId;
          const user = userId === undefined ? null : await users.get(userId).catch(() => null);
          return { kind: principal.kind, id: principal.id, role: principal.role, user };
        },
      });
    },
  };
}
