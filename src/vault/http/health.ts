import type { FastifyInstance } from 'fastify';
import type { ApiDeps, LifeboatRouteConfig } from './types.js';

const PUBLIC: LifeboatRouteConfig = { public: true };

/**
 * The unauthenticated routes: liveness, readiness and the OpenAPI document. They
 * reveal nothing about the vault's contents (the API's shape is public anyway).
 */
export function installPublicRoutes(app: FastifyInstance, deps: ApiDeps): void {
  app.get('/healthz', { config: PUBLIC, schema: { hide: true } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { config: PUBLIC, schema: { hide: true } }, async (request, reply) => {
    let ready = true;
    try {
      ready = deps.ready ? await deps.ready() : true;
    } catch (err) {
      request.log.warn({ requestId: request.id, err: err instanceof Error ? err.name : 'unknown' }, 'readiness check failed');
      ready = false;
    }
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not-ready' });
  });

  app.get('/api/docs', { config: PUBLIC, schema: { hide: true } }, async () => app.swagger());
}
