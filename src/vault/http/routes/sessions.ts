import { LifeboatError } from '../../../core/errors.js';
import type { User } from '../../../core/model.js';
import { route, type ApiRequest } from '../route.js';
import type { AuditRecord, Principal, RouteModule } from '../types.js';
import { userSchema } from './users.js';
import { idString, object, timestamp } from './schemas.js';

/** Sign-in, sign-out and passwords (docs/api.md, "Sign-in and sessions"). */
export interface SessionService {
  /**
   * The user when `password` is theirs. UNAUTHENTICATED, with one message, for an
   * unknown name, a disabled user, a user without a password and a wrong password;
   * TOO_MANY_ATTEMPTS while the name is locked out after repeated failures.
   */
  signIn(name: string, password: string): Promise<User>;
  /** A new session token of the user (an API token expiring in 12 hours); the secret is returned once. */
  startSession(userId: string): Promise<{ token: string; expiresAt: string }>;
  /** Revokes a session token; CONFLICT for an API token that is not a session. */
  endSession(tokenId: string): Promise<void>;
  /** Sets (or replaces) a user's password; VALIDATION outside 12..256 characters, NOT_FOUND for an unknown user. */
  setPassword(userId: string, password: string): Promise<void>;
  /** The user's own change: VALIDATION (on /currentPassword) unless the current password matches. */
  changeOwnPassword(userId: string, currentPassword: string, password: string): Promise<void>;
}

const password = { type: 'string', minLength: 12, maxLength: 256 };

function userOf(principal: Principal): string {
  const userId = principal.kind === 'user' ? principal.id : principal.userId;
  if (userId === undefined) throw new LifeboatError('FORBIDDEN', `a ${principal.kind} principal has no user and no password`);
  return userId;
}

/**
 * `POST /api/v1/sessions` is authenticated by the name and password in its body (no
 * bearer token), like registration and enrollment, and records its own audit entries:
 * refused ones as `anonymous:<code>`, never with the password.
 */
export function sessionsRoutes(sessions: SessionService, audit: (entry: AuditRecord) => Promise<void>, now: () => Date): RouteModule {
  const signedIn = new WeakMap<object, User>();
  const record = (req: ApiRequest, actor: string, outcome: AuditRecord['outcome'], target: string | null) =>
    audit({ at: now().toISOString(), actor, action: 'sessions.create', target, outcome, requestId: req.id });

  return {
    name: 'sessions',
    register(app) {
      route<unknown, unknown, { name: string; password: string }>(app, {
        id: 'sessions.create',
        method: 'POST',
        url: '/api/v1/sessions',
        permission: 'read',
        summary: 'Sign in with a user name and password (no bearer token); returns a session token valid 12 hours, once',
        tags: ['sessions'],
        successStatus: 201,
        authenticate: async (req): Promise<Principal> => {
          try {
            const user = await sessions.signIn(req.body.name, req.body.password);
            signedIn.set(req, user);
            return { kind: 'user', id: user.id, role: user.role };
          } catch (err) {
            const code = err instanceof LifeboatError ? err.code : 'INTERNAL';
            await record(req, `anonymous:${code}`, 'denied', null);
            throw err;
          }
        },
        schema: {
          body: object({ name: { type: 'string', minLength: 1, maxLength: 100 }, password: { type: 'string', minLength: 1, maxLength: 256 } }),
          response: { 201: object({ token: { type: 'string' }, expiresAt: timestamp, user: userSchema }) },
        },
        handler: async (req, principal) => {
          const user = signedIn.get(req);
          if (!user) throw new LifeboatError('INTERNAL', 'sign-in reached without a verified user');
          await record(req, principal.id, 'allowed', user.id);
          return { ...(await sessions.startSession(user.id)), user };
        },
      });

      route(app, {
        id: 'sessions.delete-current',
        method: 'DELETE',
        url: '/api/v1/sessions/current',
        permission: 'read',
        summary: 'Sign out: revoke the session token this request carries',
        tags: ['sessions'],
        successStatus: 204,
        schema: {},
        handler: async (_req, principal) => {
          if (principal.kind !== 'token') throw new LifeboatError('CONFLICT', `a ${principal.kind} principal has no session to end`);
          await sessions.endSession(principal.id);
          return undefined;
        },
      });

      route<{ id: string }, unknown, { password: string }>(app, {
        id: 'users.set-password',
        method: 'PUT',
        url: '/api/v1/users/:id/password',
        permission: 'manage-users',
        summary: "Set a user's password (12 to 256 characters) for signing in to the portal",
        tags: ['users'],
        successStatus: 204,
        schema: { params: object({ id: idString }), body: object({ password }) },
        handler: async (req) => {
          await sessions.setPassword(req.params.id, req.body.password);
          return undefined;
        },
      });

      route<unknown, unknown, { currentPassword: string; password: string }>(app, {
        id: 'me.set-password',
        method: 'PUT',
        url: '/api/v1/me/password',
        permission: 'read',
        summary: "Change the caller's own password; the current one must be given",
        tags: ['users'],
        successStatus: 204,
        schema: { body: object({ currentPassword: { type: 'string', minLength: 1, maxLength: 256 }, password }) },
        handler: async (req, principal) => {
          await sessions.changeOwnPassword(userOf(principal), req.body.currentPassword, req.body.password);
          return undefined;
        },
      });
    },
  };
}
