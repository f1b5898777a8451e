import Fastify, { LogController, type FastifyError, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import { LifeboatError } from '../../core/errors.js';
import { installAuth } from './auth.js';
import { handleError, installErrorHandling } from './error-handler.js';
import { installPublicRoutes } from './health.js';
import { installPortal } from './portal.js';
import { HttpMetrics, installMetrics } from './metrics.js';
import { REQUEST_ID_HEADER, requestIdGenerator } from './request-id.js';
import { declaredRoutes, route } from './route.js';
import type { ApiDeps, LifeboatRouteConfig, RouteContext } from './types.js';

export const API_PREFIX = '/api/v1';
export const DEFAULT_BODY_LIMIT_BYTES = 1024 * 1024;

/**
 * The vault's HTTP API, configured and not listening (the caller listens, or
 * injects requests in tests). Every route module's routes live under /api/v1;
 * /healthz, /readyz and /api/docs are public; /metrics needs the `read` permission
 * (Prometheus sends a bearer token: `authorization: { credentials: ... }`).
 */
export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    ...(deps.logger ? { loggerInstance: deps.logger } : { logger: false }),
    // Fastify's own request lines carry the URL with its query; ours ('request done', below) carry no URL, header or body.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    bodyLimit: deps.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES,
    requestIdHeader: false,
    genReqId: requestIdGenerator(() => deps.now()),
    exposeHeadRoutes: false,
    requestTimeout: 60_000,
    // Bodies are JSON: no coercion, no silent removal of unknown fields, every error reported.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true, useDefaults: true } },
    // Errors before routing (malformed URL encoding) take the same path as every other error.
    frameworkErrors: (err, request, reply) => {
      handleError(err as FastifyError, request, reply);
    },
  }) as unknown as FastifyInstance;

  // Only JSON is accepted; text/plain would reach handlers as a string.
  app.removeContentTypeParser('text/plain');
  app.addHook('onRequest', async (request, reply) => {
    reply.header(REQUEST_ID_HEADER, request.id);
  });
  // One line per request: method, route id (never the concrete URL), status, duration, principal; the request id is bound.
  app.addHook('onResponse', async (request, reply) => {
    const config = request.routeOptions.config as LifeboatRouteConfig | undefined;
    const principal = request.principal;
    request.log.info(
      {
        method: request.method,
        route: config?.lifeboat?.id ?? request.routeOptions.url ?? null,
        status: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 10) / 10,
        // Separate fields: "token:ID" would look like a credential to the redaction's shape net.
        principalKind: principal?.kind ?? null,
        principalId: principal?.id ?? null,
      },
      'request done',
    );
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Lifeboat vault API', version: 'v1', description: 'Conventions: docs/api.md. Errors are application/problem+json.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  const metrics = new HttpMetrics();
  installMetrics(app, metrics);
  installAuth(app, deps);
  installErrorHandling(app);
  installPublicRoutes(app, deps);
  if (deps.portalDir !== undefined) await installPortal(app, deps.portalDir);

  route(app, {
    id: 'metrics.show',
    method: 'GET',
    url: '/metrics',
    permission: 'read',
    summary: 'Prometheus metrics (text format 0.0.4)',
    tags: ['operations'],
    schema: {},
    handler: async (_request, _principal, reply) => {
      reply.type('text/plain; version=0.0.4; charset=utf-8');
      return metrics.render() + (deps.extraMetrics?.() ?? '');
    },
  });

  const ctx: RouteContext = { now: () => deps.now() };
  for (const module of deps.routes) module.register(app, ctx);
  for (const r of declaredRoutes(app)) {
    if (r.id !== 'metrics.show' && !r.url.startsWith(`${API_PREFIX}/`))
      throw new LifeboatError('INTERNAL', `route ${r.id}: ${r.url} is outside ${API_PREFIX}`);
  }
  return app;
}
