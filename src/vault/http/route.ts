import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LifeboatError } from '../../core/errors.js';
import type { Permission } from './permissions.js';
import { PERMISSIONS, requirePermission } from './permissions.js';
import { checkCaller } from './auth.js';
import type { Caller, LifeboatRouteConfig, Principal } from './types.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** A JSON schema (the subset we rely on is checked by `assertStrict`). */
export type JsonSchema = Record<string, unknown>;

export interface RouteSchema {
  /** Defaults to one bounded string per `:name` in the url. */
  readonly params?: JsonSchema;
  /** Defaults to "no query parameters". Values are coerced from strings by their declared type. */
  readonly querystring?: JsonSchema;
  /** Required for POST, PUT and PATCH; other methods refuse any body. */
  readonly body?: JsonSchema;
  /** Response schemas by status: they also filter the output (fields not declared are never sent). */
  readonly response?: Record<number, JsonSchema>;
}

export type ApiRequest<P = unknown, Q = unknown, B = unknown> = FastifyRequest<{ Params: P; Querystring: Q; Body: B }>;

export interface RouteSpec<P = unknown, Q = unknown, B = unknown> {
  /** Stable id: the OpenAPI operationId and the audit log's action, e.g. "policies.create". */
  readonly id: string;
  readonly method: HttpMethod;
  /** Full path, e.g. "/api/v1/policies/:id". */
  readonly url: string;
  readonly permission: Permission;
  /** Who may call: 'user' (default: users and their API tokens), 'server' (registered servers' credentials only) or 'agent' (enrolled agents' credentials only). */
  readonly caller?: Caller;
  /**
   * For the few routes whose credential is in the body (registering a configuration
   * server with its registration key): no bearer token is asked for; this runs after
   * validation and returns the caller, or throws (it is then checked like any other).
   */
  readonly authenticate?: (request: ApiRequest<P, Q, B>) => Promise<Principal>;
  readonly summary: string;
  readonly tags?: readonly string[];
  readonly schema: RouteSchema;
  /** Status of a successful answer; default 200 (201 is typical for creation, 204 for deletion). */
  readonly successStatus?: number;
  /** Returns the response body (ignored for 204). Throw LifeboatError for refusals. */
  readonly handler: (request: ApiRequest<P, Q, B>, principal: Principal, reply: FastifyReply) => Promise<unknown>;
}

/** What the registry keeps of each declared route (for tests, OpenAPI checks and 405 answers). */
export interface DeclaredRoute {
  readonly id: string;
  readonly method: HttpMethod;
  readonly url: string;
  readonly permission: Permission;
  readonly caller: Caller;
  /** False for routes authenticated by a credential in the body (no bearer token). */
  readonly bearer: boolean;
  readonly mutating: boolean;
  readonly schema: Required<Pick<RouteSchema, 'params' | 'querystring'>> & RouteSchema;
  /** Matches concrete paths of this route. */
  readonly pattern: RegExp;
}

const registries = new WeakMap<FastifyInstance, DeclaredRoute[]>();

/** Every route declared on `app` through `route()`, in declaration order. */
export function declaredRoutes(app: FastifyInstance): readonly DeclaredRoute[] {
  return registries.get(app) ?? [];
}

const ID_PATTERN = /^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$/;
const BODY_METHODS: ReadonlySet<HttpMethod> = new Set(['POST', 'PUT', 'PATCH']);

/**
 * Declares one route. The only way routes are added: it makes the permission
 * mandatory, requires strict schemas (`additionalProperties: false` on every object),
 * and records the route in the registry. Throws at start-up on a malformed declaration.
 */
export function route<P = unknown, Q = unknown, B = unknown>(app: FastifyInstance, spec: RouteSpec<P, Q, B>): void {
  const where = `route ${spec.id}`;
  if (!ID_PATTERN.test(spec.id)) throw new LifeboatError('INTERNAL', `${where}: id must look like "noun.verb"`);
  if (!PERMISSIONS.includes(spec.permission)) throw new LifeboatError('INTERNAL', `${where}: unknown permission ${String(spec.permission)}`);
  if (!spec.url.startsWith('/')) throw new LifeboatError('INTERNAL', `${where}: url must be absolute`);
  const registry = registries.get(app) ?? [];
  registries.set(app, registry);
  if (registry.some((r) => r.id === spec.id)) throw new LifeboatError('INTERNAL', `${where}: duplicate route id`);

  const paramNames = [...spec.url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1] as string);
  const params = spec.schema.params ?? {
    type: 'object',
    additionalProperties: false,
    required: paramNames,
    properties: Object.fromEntries(paramNames.map((n) => [n, { type: 'string', minLength: 1, maxLength: 128 }])),
  };
  const querystring = spec.schema.querystring ?? { type: 'object', additionalProperties: false, properties: {} };
  const hasBody = BODY_METHODS.has(spec.method);
  if (hasBody && spec.schema.body === undefined) throw new LifeboatError('INTERNAL', `${where}: ${spec.method} needs a body schema`);
  if (!hasBody && spec.schema.body !== undefined) throw new LifeboatError('INTERNAL', `${where}: ${spec.method} takes no body`);
  assertStrict(params, `${where} params`);
  assertStrict(querystring, `${where} querystring`);
  if (spec.schema.body) assertStrict(spec.schema.body, `${where} body`);

  const mutating = spec.method !== 'GET';
  const caller = spec.caller ?? 'user';
  const declared: DeclaredRoute = {
    id: spec.id,
    method: spec.method,
    url: spec.url,
    permission: spec.permission,
    caller,
    bearer: spec.authenticate === undefined,
    mutating,
    schema: { ...spec.schema, params, querystring },
    pattern: new RegExp(`^${spec.url.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : escapeRegExp(seg))).join('/')}$`),
  };
  registry.push(declared);

  const lifeboat = { id: spec.id, permission: spec.permission, mutating, caller };
  const config: LifeboatRouteConfig = spec.authenticate ? { public: true, lifeboat } : { lifeboat };
  const successStatus = spec.successStatus ?? 200;
  app.route({
    method: spec.method,
    url: spec.url,
    config,
    schema: {
      operationId: spec.id,
      summary: spec.summary,
      description:
        caller === 'server'
          ? `Registered servers only (${spec.authenticate ? 'credential in the body' : 'server credential as bearer token'}); requires the \`${spec.permission}\` permission.`
          : caller === 'agent'
            ? `Enrolled agents only (${spec.authenticate ? 'enrollment token in the body' : 'agent credential as bearer token'}).`
            : spec.authenticate
              ? `No bearer token: the credentials are in the body; requires the \`${spec.permission}\` permission.`
              : `Requires the \`${spec.permission}\` permission.`,
      tags: spec.tags ? [...spec.tags] : undefined,
      params,
      querystring,
      ...(spec.schema.body ? { body: spec.schema.body } : {}),
      ...(spec.schema.response ? { response: spec.schema.response } : {}),
    },
    preValidation: async (request) => {
      coerceQuery(request, querystring);
      if (!hasBody && request.body !== undefined && request.body !== null && request.body !== '')
        throw new LifeboatError('VALIDATION', `${spec.method} ${spec.url} takes no body`);
    },
    handler: async (request, reply) => {
      let principal = request.principal;
      if (!principal && spec.authenticate) {
        principal = await spec.authenticate(request as ApiRequest<P, Q, B>);
        checkCaller(principal, caller, spec.id);
        requirePermission(principal, spec.permission);
      }
      if (!principal) throw new LifeboatError('INTERNAL', 'route reached without a principal');
      const result = await spec.handler(request as ApiRequest<P, Q, B>, principal, reply);
      reply.code(successStatus);
      return successStatus === 204 ? reply.send() : result;
    },
  });
}

/** Every object schema must refuse unknown fields; checked recursively at declaration time. */
function assertStrict(schema: JsonSchema, where: string): void {
  if (schema.type === 'object' && schema.additionalProperties !== false)
    throw new LifeboatError('INTERNAL', `${where}: object schemas need additionalProperties: false`);
  const props = schema.properties as Record<string, JsonSchema> | undefined;
  for (const [name, sub] of Object.entries(props ?? {})) assertStrict(sub, `${where}.${name}`);
  if (schema.items && typeof schema.items === 'object') assertStrict(schema.items as JsonSchema, `${where}[]`);
  for (const key of ['anyOf', 'oneOf', 'allOf'] as const) {
    const list = schema[key] as JsonSchema[] | undefined;
    list?.forEach((sub, i) => assertStrict(sub, `${where}.${key}[${i}]`));
  }
}

/**
 * Query strings are text: a value declared integer, number or boolean is converted
 * when it is exactly one well-formed value; anything else is left for the validator
 * to refuse. (Bodies are JSON and never coerced, so ajv runs without coercion.)
 */
function coerceQuery(request: FastifyRequest, schema: JsonSchema): void {
  const query = request.query as Record<string, unknown> | null;
  const props = schema.properties as Record<string, JsonSchema> | undefined;
  if (!query || typeof query !== 'object' || !props) return;
  for (const [name, sub] of Object.entries(props)) {
    const value = query[name];
    if (typeof value !== 'string') continue;
    if ((sub.type === 'integer' || sub.type === 'number') && /^-?\d+(\.\d+)?$/.test(value) && value.length <= 20) query[name] = Number(value);
    else if (sub.type === 'boolean' && (value === 'true' || value === 'false')) query[name] = value === 'true';
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
