import { LifeboatError } from '../../../core/errors.js';
import type { Agent, ReplicationControl } from '../../../core/model.js';
import { route, type ApiRequest } from '../route.js';
import type { AgentConfig, AgentHeartbeat, EnrollInput, EnrollResult } from '../../services/agents.js';
import type { AuditRecord, Principal, RouteModule } from '../types.js';
import { idString, object } from './schemas.js';

/** What the agent routes need (src/vault/services/agents.ts implements it). */
export interface AgentRoutesService {
  createEnrollmentToken(itemId: string): Promise<{ itemId: string; token: string; expiresAt: string }>;
  /** ENROLLMENT_INVALID for any bad token; returns the token's id. */
  checkToken(itemId: string, token: string): Promise<string>;
  enroll(tokenId: string, input: EnrollInput): Promise<EnrollResult>;
  heartbeat(agentId: string, input: AgentHeartbeat): Promise<AgentConfig>;
  setControl(itemId: string, patch: Partial<Omit<ReplicationControl, 'itemId'>>): Promise<ReplicationControl>;
  /** Pause and throttle as they are (defaults when never set); NOT_FOUND for an unknown item. */
  controlOf(itemId: string): Promise<ReplicationControl>;
  /** NOT_FOUND when no agent has enrolled for the item. */
  agentOf(itemId: string): Promise<Agent>;
}

const endpointSchema = object({ host: { type: 'string' }, port: { type: 'integer' }, serverName: { type: 'string' } });
const requestSchema = { ...object({ id: { type: 'string' } }), nullable: true };
const modeSchema = { type: 'string', enum: ['replicate', 'fenced', 'reverse'] };
export const agentConfigSchema = object(
  {
    generation: { type: 'integer' },
    paused: { type: 'boolean' },
    throttleBytesPerSec: { type: 'integer' },
    crashConsistentFrequencySeconds: { type: 'integer' },
    appConsistentFrequencyMinutes: { type: 'integer' },
    disks: { type: 'array', items: object({ name: { type: 'string' }, storeDisk: { type: 'string' } }) },
    processServer: endpointSchema,
    mode: modeSchema,
    shutdownRequest: requestSchema,
    startRequest: requestSchema,
    reverse: { ...object({ session: { type: 'string' }, digestsWanted: { type: 'string', nullable: true } }), nullable: true },
  },
  ['generation', 'paused', 'throttleBytesPerSec', 'crashConsistentFrequencySeconds', 'appConsistentFrequencyMinutes', 'disks', 'processServer'],
);
const commandResultSchema = { ...object({ id: { type: 'string', minLength: 1, maxLength: 64 }, ok: { type: 'boolean' }, error: { type: 'string', maxLength: 65536, nullable: true } }), nullable: true };
const agentSchema = object({
  id: idString,
  itemId: idString,
  machineId: idString,
  hostname: { type: 'string' },
  version: { type: 'string', nullable: true },
  certificateSerial: { type: 'string' },
  certificateNotAfter: { type: 'string' },
  enrolledAt: { type: 'string' },
  lastHeartbeatAt: { type: 'string', nullable: true },
  disks: {
    type: 'array',
    items: object({
      name: { type: 'string' },
      sizeBytes: { type: 'integer' },
      state: { type: 'string' },
      initialPercent: { type: 'number' },
      ackedSequence: { type: 'integer' },
      lagMs: { type: 'integer' },
      lastError: { type: 'string', nullable: true },
    }),
  },
});
const controlSchema = object({ itemId: idString, paused: { type: 'boolean' }, throttleBytesPerSec: { type: 'integer' } });
const bytes = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER };
const diskName = { type: 'string', minLength: 1, maxLength: 63 };
const version = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9.+_-]*$' };
/** 1 Mbit/s = 125,000 bytes/s. */
const BYTES_PER_MBIT = 125_000;

/**
 * Agents (docs/replication.md): the operator makes a one-time enrollment token for an
 * item; the agent enrolls with it (no bearer token: the token in the body is the
 * credential) and gets its certificate and its own credential, which opens the agent
 * routes only (`caller: 'agent'`). Pause, resume and throttle are the operator's.
 *
 * `audit` records enrollments (the framework audits bearer-authenticated requests
 * only): refused ones with the reason's code, never the token.
 */
export function agentsRoutes(agents: AgentRoutesService, audit: (entry: AuditRecord) => Promise<void>, now: () => Date): RouteModule {
  const checked = new WeakMap<object, string>();
  const record = (req: ApiRequest, actor: string, outcome: AuditRecord['outcome'], target: string | null) =>
    audit({ at: now().toISOString(), actor, action: 'agents.enroll', target, outcome, requestId: req.id });

  return {
    name: 'agents',
    register(app) {
      route<{ id: string }>(app, {
        id: 'items.enrollment-token',
        method: 'POST',
        url: '/api/v1/items/:id/enrollment-token',
        permission: 'operate',
        summary: "A one-time token (24 h) the item's agent enrolls with; shown once, stored as a hash",
        tags: ['agents'],
        successStatus: 201,
        schema: {
          params: object({ id: idString }),
          body: object({}, []),
          response: { 201: object({ itemId: idString, token: { type: 'string' }, expiresAt: { type: 'string' } }) },
        },
        handler: async (req) => agents.createEnrollmentToken(req.params.id),
      });

      route<unknown, unknown, EnrollInput>(app, {
        id: 'agents.enroll',
        method: 'POST',
        url: '/api/v1/agents/enroll',
        permission: 'read',
        caller: 'agent',
        summary: "Enroll a machine's agent with its one-time token (no bearer token): returns its certificate and its credential once",
        tags: ['agents'],
        successStatus: 201,
        authenticate: async (req): Promise<Principal> => {
          try {
            const tokenId = await agents.checkToken(req.body.itemId, req.body.token);
            checked.set(req, tokenId);
            return { kind: 'agent', id: `enrollment-token:${tokenId}`, role: 'reader' };
          } catch (err) {
            const code = err instanceof LifeboatError ? err.code : 'INTERNAL';
            await record(req, `anonymous:${code}`, 'denied', req.body.itemId);
            throw err;
          }
        },
        schema: {
          body: object({
            itemId: idString,
            token: { type: 'string', minLength: 1, maxLength: 256 },
            csrPem: { type: 'string', minLength: 1, maxLength: 16384 },
            hostname: { type: 'string', minLength: 1, maxLength: 255 },
            disks: {
              type: 'array',
              minItems: 1,
              maxItems: 64,
              items: object({ name: diskName, sizeBytes: { ...bytes, minimum: 1 }, tracker: { type: 'string', minLength: 1, maxLength: 32 } }),
            },
          }),
          response: {
            201: object({
              machineId: idString,
              itemId: idString,
              credential: { type: 'string' },
              certificatePem: { type: 'string' },
              caPem: { type: 'string' },
              processServer: endpointSchema,
              config: agentConfigSchema,
            }),
          },
        },
        handler: async (req, principal) => {
          const tokenId = checked.get(req);
          if (tokenId === undefined) throw new LifeboatError('INTERNAL', 'enrollment reached without a checked token');
          try {
            const result = await agents.enroll(tokenId, req.body);
            await record(req, principal.id, 'allowed', result.itemId);
            return result;
          } catch (err) {
            await record(req, principal.id, 'failed', req.body.itemId);
            throw err;
          }
        },
      });

      route<unknown, unknown, AgentHeartbeat>(app, {
        id: 'agents.heartbeat',
        method: 'POST',
        url: '/api/v1/agents/self/heartbeat',
        permission: 'read',
        caller: 'agent',
        summary: "An agent's heartbeat (its own credential only): its disks' replication state; the answer is its configuration",
        tags: ['agents'],
        schema: {
          body: object(
            {
              disks: {
                type: 'array',
                maxItems: 64,
                items: object({
                  name: diskName,
                  sizeBytes: bytes,
                  state: { type: 'string', enum: ['initial', 'resync', 'continuous', 'paused', 'error'] },
                  initialPercent: { type: 'number', minimum: 0, maximum: 100 },
                  ackedSequence: bytes,
                  lagMs: { type: 'number', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
                  // Long errors are cut to 1,000 characters when stored, not refused: the heartbeat must get through.
                  lastError: { type: 'string', maxLength: 65536, nullable: true },
                }),
              },
              version,
              spoolBytes: bytes,
              mode: modeSchema,
              shutdown: commandResultSchema,
              start: commandResultSchema,
              reverse: {
                ...object({ session: { type: 'string', minLength: 1, maxLength: 64 }, lastSequence: bytes, bytesWritten: bytes }),
                nullable: true,
              },
            },
            ['disks', 'version'],
          ),
          response: { 200: agentConfigSchema },
        },
        handler: async (req, principal) => agents.heartbeat(principal.id, req.body),
      });

      route<{ id: string }>(app, {
        id: 'items.agent',
        method: 'GET',
        url: '/api/v1/items/:id/agent',
        permission: 'read',
        summary: "The item's enrolled agent: certificate serial, last heartbeat, and each disk's replication state, lag and last error",
        tags: ['agents'],
        schema: { params: object({ id: idString }), response: { 200: agentSchema } },
        handler: async (req) => agents.agentOf(req.params.id),
      });
      route<{ id: string }>(app, {
        id: 'items.replication-control',
        method: 'GET',
        url: '/api/v1/items/:id/replication-control',
        permission: 'read',
        summary: "Whether an item's replication is paused, and its bandwidth limit",
        tags: ['items'],
        schema: { params: object({ id: idString }), response: { 200: controlSchema } },
        handler: async (req) => agents.controlOf(req.params.id),
      });
      route<{ id: string }>(app, {
        id: 'items.pause',
        method: 'POST',
        url: '/api/v1/items/:id/pause',
        permission: 'operate',
        summary: "Pause replication of an item: its agent stops shipping at its next heartbeat (changes are kept, not lost)",
        tags: ['items'],
        schema: { params: object({ id: idString }), body: object({}, []), response: { 200: controlSchema } },
        handler: async (req) => agents.setControl(req.params.id, { paused: true }),
      });
      route<{ id: string }>(app, {
        id: 'items.resume',
        method: 'POST',
        url: '/api/v1/items/:id/resume',
        permission: 'operate',
        summary: 'Resume replication of a paused item',
        tags: ['items'],
        schema: { params: object({ id: idString }), body: object({}, []), response: { 200: controlSchema } },
        handler: async (req) => agents.setControl(req.params.id, { paused: false }),
      });
      route<{ id: string }, unknown, { throttleMbps: number }>(app, {
        id: 'items.throttle',
        method: 'PATCH',
        url: '/api/v1/items/:id/throttle',
        permission: 'operate',
        summary: "Limit an item's replication bandwidth in Mbit/s (0: no limit)",
        tags: ['items'],
        schema: {
          params: object({ id: idString }),
          body: object({ throttleMbps: { type: 'number', minimum: 0, maximum: 1_000_000 } }),
          response: { 200: controlSchema },
        },
        handler: async (req) => agents.setControl(req.params.id, { throttleBytesPerSec: Math.round(req.body.throttleMbps * BYTES_PER_MBIT) }),
      });
    },
  };
}

