import type { DrillSettings, PointChoice } from '../../../core/model.js';
import { route, type JsonSchema } from '../route.js';
import type { RouteModule } from '../types.js';
import { DESCRIPTION_MAX_CHARS, MANUAL_ACTION_MAX_CHARS, MAX_GROUPS, MAX_ITEMS_PER_GROUP, MAX_MANUAL_ACTIONS_PER_GROUP, MAX_SCHEDULE_HOURS, MAX_SCRIPTS_PER_GROUP, type PlanInput, type PlanPatch, type PlanService } from '../../plans/service.js';
import { jobSchema } from './jobs.js';
import { drillSettingsSchema, pointChoiceSchema } from './recovery.js';
import { idString, nameString, object, pageOf, pageQuery, timestamp } from './schemas.js';

const scriptName: JsonSchema = { type: 'string', minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9._-]+$' };
const scripts: JsonSchema = { type: 'array', maxItems: MAX_SCRIPTS_PER_GROUP, items: scriptName };
const groupFields = {
  name: nameString,
  itemIds: { type: 'array', minItems: 1, maxItems: MAX_ITEMS_PER_GROUP, items: idString },
  preScripts: scripts,
  postScripts: scripts,
  manualActions: { type: 'array', maxItems: MAX_MANUAL_ACTIONS_PER_GROUP, items: { type: 'string', minLength: 1, maxLength: MANUAL_ACTION_MAX_CHARS } },
};
const groups: JsonSchema = { type: 'array', minItems: 1, maxItems: MAX_GROUPS, items: object(groupFields, ['name', 'itemIds']) };
const description: JsonSchema = { type: 'string', maxLength: DESCRIPTION_MAX_CHARS };

export const planSchema = object({
  id: idString,
  vaultId: idString,
  name: { type: 'string' },
  description: { type: 'string' },
  groups: { type: 'array', items: object(groupFields) },
  createdAt: timestamp,
  updatedAt: timestamp,
});

const params = object({ id: idString });

/** Recovery plans: definitions, their operations (one job each), plan drill settings, and acknowledging manual actions. */
export function plansRoutes(plans: PlanService): RouteModule {
  return {
    name: 'plans',
    register(app) {
      route<unknown, { limit: number; after?: string; vaultId?: string }>(app, {
        id: 'plans.list',
        method: 'GET',
        url: '/api/v1/plans',
        permission: 'read',
        summary: 'List recovery plans (optionally of one vault)',
        tags: ['plans'],
        schema: { querystring: { ...pageQuery, properties: { ...(pageQuery.properties as object), vaultId: idString } }, response: { 200: pageOf(planSchema) } },
        handler: async (req) =>
          plans.page({ limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}) }, req.query.vaultId ? { vaultId: req.query.vaultId } : {}),
      });
      route<unknown, unknown, PlanInput>(app, {
        id: 'plans.create',
        method: 'POST',
        url: '/api/v1/plans',
        permission: 'configure',
        summary: 'Create a recovery plan: ordered groups of items with pre- and post-scripts (names of executables in the scripts directory) and manual actions',
        tags: ['plans'],
        successStatus: 201,
        schema: { body: object({ vaultId: idString, name: nameString, description, groups }, ['vaultId', 'name', 'groups']), response: { 201: planSchema } },
        handler: async (req) => plans.create(req.body),
      });
      route<{ id: string }>(app, {
        id: 'plans.show',
        method: 'GET',
        url: '/api/v1/plans/:id',
        permission: 'read',
        summary: 'Show a recovery plan',
        tags: ['plans'],
        schema: { params, response: { 200: planSchema } },
        handler: async (req) => plans.get(req.params.id),
      });
      route<{ id: string }, unknown, PlanPatch>(app, {
        id: 'plans.update',
        method: 'PATCH',
        url: '/api/v1/plans/:id',
        permission: 'configure',
        summary: "Change a recovery plan's name, description or groups (jobs already running keep what they started with)",
        tags: ['plans'],
        schema: { params, body: { ...object({ name: nameString, description, groups }, []), minProperties: 1 }, response: { 200: planSchema } },
        handler: async (req) => plans.update(req.params.id, req.body),
      });
      route<{ id: string }>(app, {
        id: 'plans.delete',
        method: 'DELETE',
        url: '/api/v1/plans/:id',
        permission: 'configure',
        summary: 'Delete a recovery plan (refused while one of its jobs is queued or running)',
        tags: ['plans'],
        successStatus: 204,
        schema: { params },
        handler: async (req) => plans.delete(req.params.id),
      });
      route<{ id: string }, unknown, { point?: PointChoice }>(app, {
        id: 'plans.test-failover',
        method: 'POST',
        url: '/api/v1/plans/:id/test-failover',
        permission: 'operate',
        summary: "Test failover of a whole plan: one job whose steps are the groups' scripts, items (in parallel) and manual actions",
        tags: ['plans'],
        successStatus: 202,
        schema: { params, body: object({ point: pointChoiceSchema }, []), response: { 202: jobSchema } },
        handler: async (req, principal) =>
          plans.start(req.params.id, { operation: 'test-failover', point: req.body.point ?? { kind: 'latest-processed' }, initiator: principal.userId ?? principal.id }),
      });
      route<{ id: string }, unknown, { notes?: string | null }>(app, {
        id: 'plans.cleanup-test-failover',
        method: 'POST',
        url: '/api/v1/plans/:id/test-failover/cleanup',
        permission: 'operate',
        summary: "Clean up a plan's test failover: one job that cleans up its items group by group",
        tags: ['plans'],
        successStatus: 202,
        schema: { params, body: object({ notes: { type: 'string', maxLength: 2000, nullable: true } }, []), response: { 202: jobSchema } },
        handler: async (req, principal) =>
          plans.start(req.params.id, { operation: 'cleanup-test-failover', notes: req.body.notes ?? null, initiator: principal.userId ?? principal.id }),
      });
      route<{ id: string }, unknown, { point?: PointChoice; shutdownSource?: boolean }>(app, {
        id: 'plans.failover',
        method: 'POST',
        url: '/api/v1/plans/:id/failover',
        permission: 'operate',
        summary: 'Fail over a whole plan: one job, group after group',
        tags: ['plans'],
        successStatus: 202,
        schema: { params, body: object({ point: pointChoiceSchema, shutdownSource: { type: 'boolean' } }, []), response: { 202: jobSchema } },
        handler: async (req, principal) =>
          plans.start(req.params.id, {
            operation: 'failover',
            point: req.body.point ?? { kind: 'latest-processed' },
            shutdownSource: req.body.shutdownSource === true,
            initiator: principal.userId ?? principal.id,
          }),
      });
      route<{ id: string }>(app, {
        id: 'plans.drill-settings-show',
        method: 'GET',
        url: '/api/v1/plans/:id/drill-settings',
        permission: 'read',
        summary: "Show a plan's drill settings (its schedule)",
        tags: ['plans'],
        schema: { params, response: { 200: drillSettingsSchema } },
        handler: async (req): Promise<DrillSettings> => plans.drillSettings(req.params.id),
      });
      route<{ id: string }, unknown, { scheduleEveryHours: number | null }>(app, {
        id: 'plans.drill-settings-update',
        method: 'PUT',
        url: '/api/v1/plans/:id/drill-settings',
        permission: 'configure',
        summary: "Set a plan's drill schedule: an unattended test failover and cleanup every N hours (null: none)",
        tags: ['plans'],
        schema: {
          params,
          body: object({ scheduleEveryHours: { type: 'integer', minimum: 1, maximum: MAX_SCHEDULE_HOURS, nullable: true } }),
          response: { 200: drillSettingsSchema },
        },
        handler: async (req) => plans.putDrillSettings(req.params.id, req.body),
      });
      route<{ id: string }, unknown, { step: number }>(app, {
        id: 'jobs.acknowledge',
        method: 'POST',
        url: '/api/v1/jobs/:id/acknowledge',
        permission: 'operate',
        summary: "Acknowledge the manual action a recovery plan's job waits on (its step index, from 0); 409 unless that step is a manual action running now",
        tags: ['jobs'],
        schema: { params, body: object({ step: { type: 'integer', minimum: 0, maximum: 10000 } }), response: { 200: jobSchema } },
        handler: async (req, principal) => plans.acknowledge(req.params.id, req.body.step, principal.userId ?? principal.id),
      });
    },
  };
}
