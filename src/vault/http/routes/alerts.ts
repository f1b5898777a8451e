import { route } from '../route.js';
import type { RouteModule } from '../types.js';
import type { DbAlerts } from '../../services/replication-services.js';
import { idString, object, pageOf, pageOrder, pageQuery, timestamp } from './schemas.js';

export const alertSchema = object({
  id: idString,
  kind: { type: 'string' },
  severity: { type: 'string' },
  subjectId: { type: 'string' },
  message: { type: 'string' },
  raisedAt: timestamp,
  clearedAt: { type: 'string', nullable: true },
});

/** Alerts raised and cleared by the evaluator (src/vault/services/alert-evaluator.ts). */
export function alertsRoutes(alerts: DbAlerts): RouteModule {
  return {
    name: 'alerts',
    register(app) {
      route<unknown, { limit: number; after?: string; order?: 'oldest' | 'newest'; status?: 'open' | 'all' }>(app, {
        id: 'alerts.list',
        method: 'GET',
        url: '/api/v1/alerts',
        permission: 'read',
        summary: 'List alerts: open ones (default) or all',
        tags: ['alerts'],
        schema: {
          querystring: { ...pageQuery, properties: { ...(pageQuery.properties as object), order: pageOrder, status: { type: 'string', enum: ['open', 'all'] } } },
          response: { 200: pageOf(alertSchema) },
        },
        handler: async (req) =>
          alerts.list({ limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}), ...(req.query.order ? { order: req.query.order } : {}) }, req.query.status === 'all' ? {} : { open: true }),
      });
    },
  };
}
