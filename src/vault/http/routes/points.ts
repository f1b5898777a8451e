import type { ItemPoints, RpoHistory } from '../../../core/model.js';
import { route } from '../route.js';
import type { RouteModule } from '../types.js';
import { idString, object, timestamp } from './schemas.js';

/** An item's recovery points, read from its vault's store. NOT_FOUND for an unknown item; a store that cannot be opened is its own error. */
export interface ItemPointsService {
  points(itemId: string, limit: number): Promise<ItemPoints>;
}

/** An item's RPO over time (src/vault/services/rpo-history.ts). NOT_FOUND for an unknown item. */
export interface RpoHistoryService {
  history(itemId: string, hours: number): Promise<RpoHistory>;
}

const itemPointSchema = object({
  pointId: { type: 'string' },
  disk: { type: 'string' },
  capturedAt: timestamp,
  consistency: { type: 'string', enum: ['crash', 'app'] },
  sizeBytes: { type: 'integer' },
  generation: { type: 'integer' },
});
const pointList = { type: 'array', items: itemPointSchema };

/** What the portal shows of an item's history: its recovery points and its RPO over time. */
export function pointsRoutes(points: ItemPointsService, rpo: RpoHistoryService): RouteModule {
  return {
    name: 'points',
    register(app) {
      route<{ id: string }, { limit: number }>(app, {
        id: 'items.points',
        method: 'GET',
        url: '/api/v1/items/:id/points',
        permission: 'read',
        summary: "The item's recovery points on all its disks, newest first, and per disk the newest (app-consistent) one",
        tags: ['recovery'],
        schema: {
          params: object({ id: idString }),
          querystring: { type: 'object', additionalProperties: false, properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } } },
          response: { 200: object({ items: pointList, latestProcessed: pointList, latestAppConsistent: pointList }) },
        },
        handler: async (req) => points.points(req.params.id, req.query.limit),
      });

      route<{ id: string }, { hours: number }>(app, {
        id: 'items.rpo-history',
        method: 'GET',
        url: '/api/v1/items/:id/rpo-history',
        permission: 'read',
        summary: "The item's RPO sampled over the last `hours` hours (1 to 168), oldest first, with its policy's threshold",
        tags: ['recovery'],
        schema: {
          params: object({ id: idString }),
          querystring: { type: 'object', additionalProperties: false, properties: { hours: { type: 'integer', minimum: 1, maximum: 168, default: 24 } } },
          response: {
            200: object({
              itemId: idString,
              thresholdSeconds: { type: 'integer' },
              samples: { type: 'array', items: object({ at: timestamp, rpoSeconds: { type: 'integer' } }) },
            }),
          },
        },
        handler: async (req) => rpo.history(req.params.id, req.query.hours),
      });
    },
  };
}
