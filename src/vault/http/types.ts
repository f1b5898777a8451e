import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { AuditEntry } from '../../core/model.js';
import type { Principal as CorePrincipal } from '../../core/roles.js';
import type { Permission } from './permissions.js';

/**
 * Who is calling: a user (session), an API token acting for a user, a registered
 * server, or an enrolled agent. `id` (user, token, server or agent id) is what the
 * audit log records as the actor.
 */
export interface Principal extends Omit<CorePrincipal, 'kind'> {
  readonly kind: CorePrincipal['kind'] | 'agent';
  /** For tokens: the user the token acts for. */
  readonly userId?: string;
}

/** An audit record as the HTTP layer produces it; the store assigns the id. */
export type AuditRecord = Omit<AuditEntry, 'id'>;

/**
 * What the API needs from the rest of the vault. Everything is an interface so the
 * database-backed implementations plug in without the HTTP layer knowing them.
 */
export interface ApiDeps {
  /**
   * Resolves a bearer token to its principal; `undefined` for an unknown, expired or
   * revoked token. Must not throw for bad tokens (a throw is a 500 / 503).
   */
  authenticate(bearerToken: string): Principal | undefined | Promise<Principal | undefined>;
  /**
   * Records one audit entry. Awaited before a mutating handler runs: when it
   * throws, the operation does not happen (no unaudited change).
   */
  audit(entry: AuditRecord): void | Promise<void>;
  now(): Date;
  /** Readiness (database open, migrations applied); `/readyz` answers 503 while false. */
  ready?(): boolean | Promise<boolean>;
  /** A pino-compatible logger; none = silent. Headers and bodies are never logged. */
  logger?: FastifyBaseLogger;
  routes: readonly RouteModule[];
  /** Largest accepted request body; default 1 MiB. */
  bodyLimitBytes?: number;
  /** More Prometheus text appended to /metrics (e.g. the built-in process server's figures). */
  extraMetrics?(): string;
  /** The built portal (dist/web) served at `/`; none: no portal routes. */
  portalDir?: string;
}

/** What a route module gets besides the app: the clock. Services are closed over by the module. */
export interface RouteContext {
  now(): Date;
}

/** A group of routes (users, policies, ...). `register` declares them with `route()` only. */
export interface RouteModule {
  readonly name: string;
  register(app: FastifyInstance, ctx: RouteContext): void;
}

/** Who may call a route: users (and their tokens), registered servers, or enrolled agents. Never two of them. */
export type Caller = 'user' | 'server' | 'agent';

/** Per-route configuration that the global hooks read (set by `route()` or by the built-in public routes). */
export interface LifeboatRouteConfig {
  /** No authentication (health, readiness, OpenAPI document). */
  readonly public?: boolean;
  readonly lifeboat?: { readonly id: string; readonly permission: Permission; readonly mutating: boolean; readonly caller?: Caller };
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the authentication hook on every non-public route; null before it runs. */
    principal: Principal | null;
  }
}
