import { ITEM_STATES } from '../../../core/item-state.js';
import type { ItemState } from '../../../core/model.js';
import { route } from '../route.js';
import type { RouteModule } from '../types.js';
import type { ComputeInput, DbReplication, EnableInput } from '../../services/replication-services.js';
import { jobSchema } from './jobs.js';
import { idString, nameString, object, pageOf, pageQuery, timestamp } from './schemas.js';

const nullableText = { type: 'string', minLength: 1, maxLength: 100, nullable: true };
const ip = { type: 'string', minLength: 2, maxLength: 45, nullable: true };
const computeFields = { targetName: nameString, size: { type: 'string', minLength: 1, maxLength: 64 }, network: nullableText, subnet: nullableText, ip };
const computeSchema = object(computeFields);

export const itemSchema = object({
  id: idString,
  vaultId: idString,
  machineId: idString,
  policyId: idString,
  processServerId: { ...idString, nullable: true },
  state: { type: 'string', enum: [...ITEM_STATES] },
  initialReplicationPercent: { type: 'integer' },
  rpoSeconds: { type: 'integer', nullable: true },
  compute: computeSchema,
  disks: { type: 'array', items: object({ name: { type: 'string' }, sizeBytes: { type: 'integer' } }) },
  generation: { type: 'integer' },
  createdAt: timestamp,
  updatedAt: timestamp,
});

const enableBody = object(
  {
    vaultId: idString,
    policyId: idString,
    configServerId: idString,
    processServerId: idString,
    install: { type: 'string', enum: ['push', 'manual'] },
    accountId: idString,
    machines: { type: 'array', minItems: 1, maxItems: 100, items: idString },
    compute: { type: 'array', maxItems: 100, items: object({ machineId: idString, ...computeFields }, ['machineId']) },
  },
  ['vaultId', 'policyId', 'configServerId', 'machines'],
);

/** Seed step 5: enable replication, then replicated items and their compute settings. */
export function replicationRoutes(replication: DbReplication): RouteModule {
  return {
    name: 'replication',
    register(app) {
      route<unknown, unknown, EnableInput>(app, {
        id: 'replication.enable',
        method: 'POST',
        url: '/api/v1/replication/enable',
        permission: 'configure',
        summary: 'Enable replication for machines: one replicated item and one "Enable protection" job per machine',
        tags: ['replication'],
        successStatus: 202,
        schema: { body: enableBody, response: { 202: object({ items: { type: 'array', items: itemSchema }, jobs: { type: 'array', items: jobSchema } }) } },
        handler: async (req, principal) => replication.enable(req.body, principal.userId ?? principal.id),
      });
      route<unknown, { limit: number; after?: string; vaultId?: string; state?: ItemState }>(app, {
        id: 'items.list',
        method: 'GET',
        url: '/api/v1/items',
        permission: 'read',
        summary: 'List replicated items',
        tags: ['items'],
        schema: {
          querystring: { ...pageQuery, properties: { ...(pageQuery.properties as object), vaultId: idString, state: { type: 'string', enum: [...ITEM_STATES] } } },
          response: { 200: pageOf(itemSchema) },
        },
        handler: async (req) =>
          replication.listItems(
            { limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}) },
            { ...(req.query.vaultId ? { vaultId: req.query.vaultId } : {}), ...(req.query.state ? { state: req.query.state } : {}) },
          ),
      });
      route<{ id: string }>(app, {
        id: 'items.show',
        method: 'GET',
        url: '/api/v1/items/:id',
        permission: 'read',
        summary: 'Show a replicated item',
        tags: ['items'],
        schema: { params: object({ id: idString }), response: { 200: itemSchema } },
        handler: async (req) => replication.getItem(req.params.id),
      });
      route<{ id: string }, unknown, ComputeInput>(app, {
        id: 'items.update-compute',
        method: 'PATCH',
        url: '/api/v1/items/:id/compute',
        permission: 'configure',
        summary: 'Change the compute and network settings of a replicated item (target name, size, network, subnet, IP)',
        tags: ['items'],
        schema: { params: object({ id: idString }), body: { ...object(computeFields, []), minProperties: 1 }, response: { 200: itemSchema } },
        handler: async (req) => replication.updateCompute(req.params.id, req.body),
      });
    },
  };
}
