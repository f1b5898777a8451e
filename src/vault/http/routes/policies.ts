import { POLICY_LIMITS, POLICY_NAME_PATTERN } from '../../../core/policy.js';
import { route } from '../route.js';
import type { PolicyInput, PolicyPatch, PolicyService } from '../services.js';
import type { RouteModule } from '../types.js';
import { idString, object, pageOf, pageQuery, timestamp } from './schemas.js';

/** The field schemas follow src/core/policy.ts; rules between fields are the service's (VALIDATION). */
const policyName = { type: 'string', minLength: 1, maxLength: 64, pattern: POLICY_NAME_PATTERN.source };
const settings = {
  rpoThresholdSeconds: { type: 'integer', minimum: POLICY_LIMITS.rpoThresholdSeconds.min, maximum: POLICY_LIMITS.rpoThresholdSeconds.max },
  retentionHours: { type: 'integer', minimum: POLICY_LIMITS.retentionHours.min, maximum: POLICY_LIMITS.retentionHours.max },
  appConsistentFrequencyMinutes: { type: 'integer', minimum: 0, maximum: POLICY_LIMITS.appConsistentFrequencyMinutes.max },
  crashConsistentFrequencySeconds: {
    type: 'integer',
    minimum: POLICY_LIMITS.crashConsistentFrequencySeconds.min,
    maximum: POLICY_LIMITS.crashConsistentFrequencySeconds.max,
  },
};

export const policySchema = object({ id: idString, vaultId: idString, name: policyName, ...settings, createdAt: timestamp });

/** Replication policies (seed step 5). */
export function policiesRoutes(policies: PolicyService): RouteModule {
  return {
    name: 'policies',
    register(app) {
      route<unknown, { limit: number; after?: string }>(app, {
        id: 'policies.list',
        method: 'GET',
        url: '/api/v1/policies',
        permission: 'read',
        summary: 'List replication policies',
        tags: ['policies'],
        schema: { querystring: pageQuery, response: { 200: pageOf(policySchema) } },
        handler: async (req) => policies.list({ limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}) }),
      });

      route<{ id: string }>(app, {
        id: 'policies.show',
        method: 'GET',
        url: '/api/v1/policies/:id',
        permission: 'read',
        summary: 'Show a replication policy',
        tags: ['policies'],
        schema: { params: object({ id: idString }), response: { 200: policySchema } },
        handler: async (req) => policies.get(req.params.id),
      });

      route<unknown, unknown, PolicyInput>(app, {
        id: 'policies.create',
        method: 'POST',
        url: '/api/v1/policies',
        permission: 'configure',
        summary: 'Create a replication policy (numeric settings left out take their defaults)',
        tags: ['policies'],
        successStatus: 201,
        schema: { body: object({ vaultId: idString, name: policyName, ...settings }, ['vaultId', 'name']), response: { 201: policySchema } },
        handler: async (req) => policies.create(req.body),
      });

      route<{ id: string }, unknown, PolicyPatch>(app, {
        id: 'policies.update',
        method: 'PATCH',
        url: '/api/v1/policies/:id',
        permission: 'configure',
        summary: 'Change some settings of a replication policy',
        tags: ['policies'],
        schema: {
          params: object({ id: idString }),
          body: { ...object({ name: policyName, ...settings }, []), minProperties: 1 },
          response: { 200: policySchema },
        },
        handler: async (req) => policies.update(req.params.id, req.body),
      });
    },
  };
}
