import type { PointChoice, Probe } from '../../../core/model.js';
import type { RecoveryOperations } from '../../recovery/module.js';
import type { DrillSettingsInput, RecoveryReads } from '../../recovery/service.js';
import { route, type JsonSchema } from '../route.js';
import type { Principal, RouteModule } from '../types.js';
import { jobSchema } from './jobs.js';
import { idString, nullableTimestamp, object, timestamp } from './schemas.js';

const params = object({ id: idString });
const nullableText = (maxLength: number): JsonSchema => ({ type: 'string', maxLength, nullable: true });

/** `{kind: latest-processed | latest-app-consistent | latest}`, `{kind: point, pointId}` or `{kind: time, at}`. */
export const pointChoiceSchema: JsonSchema = {
  oneOf: [
    object({ kind: { type: 'string', enum: ['latest-processed', 'latest-app-consistent', 'latest'] } }),
    object({ kind: { type: 'string', enum: ['point'] }, pointId: { type: 'string', minLength: 1, maxLength: 26, pattern: '^[0-9A-Za-z]+$' } }),
    object({ kind: { type: 'string', enum: ['time'] }, at: { type: 'string', minLength: 1, maxLength: 40 } }),
  ],
};

const chosenSchema = object({
  choice: { type: 'object', additionalProperties: false, properties: { kind: { type: 'string' }, pointId: { type: 'string' }, at: { type: 'string' } } },
  disks: {
    type: 'array',
    items: object({ disk: { type: 'string' }, pointId: { type: 'string' }, capturedAt: timestamp, consistency: { type: 'string', enum: ['crash', 'app'] } }),
  },
});

const probeSchema: JsonSchema = {
  oneOf: [
    object({
      name: { type: 'string', minLength: 1, maxLength: 64 },
      kind: { type: 'string', enum: ['tcp'] },
      port: { type: 'integer', minimum: 1, maximum: 65535 },
      timeoutSeconds: { type: 'integer', minimum: 1, maximum: 3600 },
    }),
    object(
      {
        name: { type: 'string', minLength: 1, maxLength: 64 },
        kind: { type: 'string', enum: ['command'] },
        command: { type: 'string', minLength: 1, maxLength: 1000 },
        timeoutSeconds: { type: 'integer', minimum: 1, maximum: 3600 },
        expectOutput: { type: 'string', minLength: 1, maxLength: 1000 },
      },
      ['name', 'kind', 'command', 'timeoutSeconds'],
    ),
  ],
};

const probeResultSchema = object({
  name: { type: 'string' },
  kind: { type: 'string', enum: ['tcp', 'command'] },
  ok: { type: 'boolean' },
  detail: { type: 'string' },
  durationMs: { type: 'integer' },
});

export const drillReportSchema = object({
  id: idString,
  itemId: idString,
  planId: { ...idString, nullable: true },
  operation: { type: 'string', enum: ['test-failover', 'failover'] },
  trigger: { type: 'string', enum: ['operator', 'schedule', 'plan'] },
  jobId: idString,
  cleanupJobId: { ...idString, nullable: true },
  outcome: { type: 'string', enum: ['running', 'passed', 'failed'] },
  point: { ...chosenSchema, nullable: true },
  rpoSeconds: { type: 'integer', nullable: true },
  rtoSeconds: { type: 'integer', nullable: true },
  driver: { type: 'string' },
  network: { type: 'string' },
  machineId: { type: 'string', nullable: true },
  accel: { type: 'string', nullable: true },
  probes: { type: 'array', items: probeResultSchema },
  consoleLog: { type: 'string' },
  error: { type: 'string', nullable: true },
  notes: { type: 'string', nullable: true },
  startedAt: timestamp,
  endedAt: nullableTimestamp,
});

export const drillSettingsSchema = object({
  id: idString,
  subjectKind: { type: 'string', enum: ['item', 'plan'] },
  probes: { type: 'array', items: probeSchema },
  bootMarker: { type: 'string', nullable: true },
  bootTimeoutSeconds: { type: 'integer' },
  scheduleEveryHours: { type: 'integer', nullable: true },
  nextRunAt: nullableTimestamp,
  lastRunAt: nullableTimestamp,
  updatedAt: timestamp,
});

const recoveredMachineSchema = object({
  id: { type: 'string' },
  itemId: idString,
  purpose: { type: 'string', enum: ['test', 'failover'] },
  driver: { type: 'string' },
  point: chosenSchema,
  network: { type: 'string' },
  state: { type: 'string', enum: ['creating', 'running', 'stopped', 'deleting'] },
  jobId: idString,
  createdAt: timestamp,
  updatedAt: timestamp,
});

const listOf = (item: JsonSchema): JsonSchema => object({ items: { type: 'array', items: item } });
const initiator = (p: Principal): string => p.userId ?? p.id;

/** Test failover, cleanup, failover, change of point, commit (202 with the job), drill reports and settings (docs/recovery.md). */
export function recoveryRoutes(ops: RecoveryOperations, reads: RecoveryReads): RouteModule {
  return {
    name: 'recovery',
    register(app) {
      route<{ id: string }, unknown, { point?: PointChoice }>(app, {
        id: 'items.test-failover',
        method: 'POST',
        url: '/api/v1/items/:id/test-failover',
        permission: 'operate',
        summary: 'Start a test failover (drill) of a protected item in the isolated network; the job writes a drill report',
        tags: ['recovery'],
        successStatus: 202,
        schema: { params, body: object({ point: pointChoiceSchema }, []), response: { 202: jobSchema } },
        handler: async (req, p) => (await ops.startTestFailover(req.params.id, { point: req.body.point ?? { kind: 'latest-processed' }, initiator: initiator(p) })).job,
      });
      route<{ id: string }, unknown, { notes?: string }>(app, {
        id: 'items.test-failover-cleanup',
        method: 'POST',
        url: '/api/v1/items/:id/test-failover/cleanup',
        permission: 'operate',
        summary: 'Clean up a test failover: stop and delete the test machine, keep the console tail and the notes in the report',
        tags: ['recovery'],
        successStatus: 202,
        schema: { params, body: object({ notes: { type: 'string', maxLength: 10_000 } }, []), response: { 202: jobSchema } },
        handler: async (req, p) => ops.cleanupTestFailover(req.params.id, { notes: req.body.notes ?? null, initiator: initiator(p) }),
      });
      route<{ id: string }, unknown, { point: PointChoice; shutdownSource?: boolean }>(app, {
        id: 'items.failover',
        method: 'POST',
        url: '/api/v1/items/:id/failover',
        permission: 'operate',
        summary: 'Fail over an item: fence the source, create and start the replica machine at the chosen point (never cancelled half-way)',
        tags: ['recovery'],
        successStatus: 202,
        schema: { params, body: object({ point: pointChoiceSchema, shutdownSource: { type: 'boolean' } }, ['point']), response: { 202: jobSchema } },
        handler: async (req, p) => ops.startFailover(req.params.id, { point: req.body.point, shutdownSource: req.body.shutdownSource ?? false, initiator: initiator(p) }),
      });
      route<{ id: string }, unknown, { point: PointChoice }>(app, {
        id: 'items.change-point',
        method: 'POST',
        url: '/api/v1/items/:id/change-point',
        permission: 'operate',
        summary: 'Recreate the replica machine of a failed-over item at another recovery point',
        tags: ['recovery'],
        successStatus: 202,
        schema: { params, body: object({ point: pointChoiceSchema }), response: { 202: jobSchema } },
        handler: async (req, p) => ops.changeRecoveryPoint(req.params.id, { point: req.body.point, initiator: initiator(p) }),
      });
      route<{ id: string }, unknown, Record<string, never>>(app, {
        id: 'items.commit',
        method: 'POST',
        url: '/api/v1/items/:id/commit',
        permission: 'operate',
        summary: "Commit a failover: once the replica no longer reads the store, delete the item's other recovery points",
        tags: ['recovery'],
        successStatus: 202,
        schema: { params, body: object({}), response: { 202: jobSchema } },
        handler: async (req, p) => ops.commit(req.params.id, { initiator: initiator(p) }),
      });
      route<{ id: string }>(app, {
        id: 'drill-reports.list',
        method: 'GET',
        url: '/api/v1/items/:id/drill-reports',
        permission: 'read',
        summary: "An item's drill reports, newest first",
        tags: ['recovery'],
        schema: { params, response: { 200: listOf(drillReportSchema) } },
        handler: async (req) => ({ items: await reads.reports(req.params.id) }),
      });
      route(app, {
        id: 'drill-reports.summary',
        method: 'GET',
        url: '/api/v1/drill-summary',
        permission: 'read',
        summary: "Every item's newest drill report and newest passed drill report (null when none)",
        tags: ['recovery'],
        schema: {
          response: {
            200: listOf(object({ itemId: idString, latest: { ...drillReportSchema, nullable: true }, lastPassed: { ...drillReportSchema, nullable: true } })),
          },
        },
        handler: async () => ({ items: await reads.summary() }),
      });
      route<{ id: string }>(app, {
        id: 'drill-reports.show',
        method: 'GET',
        url: '/api/v1/drill-reports/:id',
        permission: 'read',
        summary: 'One drill report',
        tags: ['recovery'],
        schema: { params, response: { 200: drillReportSchema } },
        handler: async (req) => reads.report(req.params.id),
      });
      route<{ id: string }>(app, {
        id: 'drill-settings.show',
        method: 'GET',
        url: '/api/v1/items/:id/drill-settings',
        permission: 'read',
        summary: "An item's drill settings: probes, boot marker, boot timeout, schedule",
        tags: ['recovery'],
        schema: { params, response: { 200: drillSettingsSchema } },
        handler: async (req) => reads.settings(req.params.id),
      });
      route<{ id: string }, unknown, { probes: Probe[]; bootMarker: string | null; bootTimeoutSeconds?: number; scheduleEveryHours: number | null }>(app, {
        id: 'drill-settings.update',
        method: 'PUT',
        url: '/api/v1/items/:id/drill-settings',
        permission: 'configure',
        summary: "Replace an item's drill settings (a schedule's first drill is due one period from now)",
        tags: ['recovery'],
        schema: {
          params,
          body: object(
            {
              probes: { type: 'array', maxItems: 32, items: probeSchema },
              bootMarker: nullableText(1000),
              bootTimeoutSeconds: { type: 'integer', minimum: 1, maximum: 86_400 },
              scheduleEveryHours: { type: 'integer', minimum: 1, maximum: 8760, nullable: true },
            },
            ['probes', 'bootMarker', 'scheduleEveryHours'],
          ),
          response: { 200: drillSettingsSchema },
        },
        handler: async (req) => reads.putSettings(req.params.id, req.body as DrillSettingsInput),
      });
      route<{ id: string }>(app, {
        id: 'recovered-machines.list',
        method: 'GET',
        url: '/api/v1/items/:id/recovered-machines',
        permission: 'read',
        summary: "The machines a compute driver runs for an item (its test or replica machine)",
        tags: ['recovery'],
        schema: { params, response: { 200: listOf(recoveredMachineSchema) } },
        handler: async (req) => ({ items: await reads.machines(req.params.id) }),
      });
    },
  };
}
