import { LifeboatError } from '../../../core/errors.js';
import type { ConfigServer, ProcessServer, RegistrationKey } from '../../../core/model.js';
import { route } from '../route.js';
import type { ApiRequest } from '../route.js';
import { MAX_DISCOVERED_MACHINES, type HeartbeatResult } from '../../services/registration.js';
import type { Page, PageRequest } from '../services.js';
import type { AuditRecord, Principal, RouteModule } from '../types.js';
import { idString, nameString, nullableTimestamp, object, pageOf, pageQuery, timestamp } from './schemas.js';

export interface RegisterBody {
  registrationKey: string;
  name: string;
  address: string;
  version: string;
  clock: string;
}

export interface HeartbeatBody {
  version: string;
  clock: string;
  processServers?: { name: string; spoolUsedBytes: number; spoolLimitBytes: number; throughputBytesPerSec: number }[];
  /** A discovery report: every machine discovery found (it ran since the last heartbeat). */
  discovered?: { name: string; privateIp: string; os: string; kernel?: string | null }[];
}

/** What the configuration-server routes need (seed step 3). */
export interface ConfigServerService {
  /** Throws REGISTRATION_KEY_INVALID / _EXPIRED or CLOCK_SKEW. */
  verifyKey(text: string, callerClock: string): Promise<{ vaultId: string; key: RegistrationKey }>;
  register(vaultId: string, input: { name: string; address: string; version: string }): Promise<{ server: ConfigServer; processServer: ProcessServer; credential: string }>;
  /** Throws VALIDATION for a discovery report with a bad IP or a name twice. */
  heartbeat(serverId: string, input: HeartbeatBody): Promise<HeartbeatResult>;
  refresh(serverId: string): Promise<ConfigServer>;
  serversPage(page: PageRequest): Promise<Page<ConfigServer>>;
  getServer(id: string): Promise<ConfigServer>;
  processServersPage(page: PageRequest): Promise<Page<ProcessServer>>;
}

const health = { type: 'string', enum: ['healthy', 'warning', 'critical', 'unknown'] };
const version = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9.+_-]*$' };
const address = { type: 'string', minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9.:\\[\\]_-]+$' };
const clock = { type: 'string', minLength: 10, maxLength: 40 };
const bytes = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER };
// The same limits as POST /api/v1/machines (routes/machines.ts).
const machineIp = { type: 'string', minLength: 2, maxLength: 45 };
const machineOs = { type: 'string', minLength: 1, maxLength: 64 };
const machineKernel = { type: 'string', minLength: 1, maxLength: 128, nullable: true };
const count = { type: 'integer', minimum: 0 };

export const configServerSchema = object({
  id: idString,
  vaultId: idString,
  name: nameString,
  address: { type: 'string' },
  version: { type: 'string' },
  registeredAt: timestamp,
  lastHeartbeatAt: nullableTimestamp,
  health,
  lastRefreshAt: nullableTimestamp,
});

export const processServerSchema = object({
  id: idString,
  configServerId: idString,
  name: nameString,
  address: { type: 'string' },
  version: { type: 'string' },
  lastHeartbeatAt: nullableTimestamp,
  health,
  spoolUsedBytes: { type: 'integer' },
  spoolLimitBytes: { type: 'integer' },
  throughputBytesPerSec: { type: 'integer' },
});

/**
 * Configuration and process servers. Registration is the one route a caller
 * reaches without a bearer token: the registration key in the body is its
 * credential (checked before anything is created), and the answer carries the
 * server credential (`lbs_…`, shown once) that the server sends as its bearer
 * token afterwards. Server credentials open `caller: 'server'` routes only.
 *
 * `audit` records registrations (the framework audits bearer-authenticated
 * requests only): refused ones with the reason's code, never the key text.
 */
export function configServersRoutes(servers: ConfigServerService, audit: (entry: AuditRecord) => Promise<void>, now: () => Date): RouteModule {
  const verified = new WeakMap<object, string>();
  const record = (req: ApiRequest, actor: string, outcome: AuditRecord['outcome'], target: string | null) =>
    audit({ at: now().toISOString(), actor, action: 'config-servers.register', target, outcome, requestId: req.id });

  return {
    name: 'config-servers',
    register(app) {
      route<unknown, unknown, RegisterBody>(app, {
        id: 'config-servers.register',
        method: 'POST',
        url: '/api/v1/config-servers/register',
        permission: 'read',
        caller: 'server',
        summary: 'Register a configuration server with a registration key (no bearer token); returns its server credential once',
        tags: ['config-servers'],
        successStatus: 201,
        authenticate: async (req): Promise<Principal> => {
          try {
            const { vaultId, key } = await servers.verifyKey(req.body.registrationKey, req.body.clock);
            verified.set(req, vaultId);
            return { kind: 'server', id: `registration-key:${key.id}`, role: 'reader' };
          } catch (err) {
            const code = err instanceof LifeboatError ? err.code : 'INTERNAL';
            await record(req, `anonymous:${code}`, 'denied', null);
            throw err;
          }
        },
        schema: {
          body: object({ registrationKey: { type: 'string', minLength: 1, maxLength: 2048 }, name: nameString, address, version, clock }),
          response: { 201: object({ server: configServerSchema, processServer: processServerSchema, credential: { type: 'string' } }) },
        },
        handler: async (req, principal) => {
          const vaultId = verified.get(req);
          if (vaultId === undefined) throw new LifeboatError('INTERNAL', 'registration reached without a verified key');
          try {
            const result = await servers.register(vaultId, { name: req.body.name, address: req.body.address, version: req.body.version });
            await record(req, principal.id, 'allowed', result.server.id);
            return result;
          } catch (err) {
            await record(req, principal.id, 'failed', null);
            throw err;
          }
        },
      });

      route<{ id: string }, unknown, HeartbeatBody>(app, {
        id: 'config-servers.heartbeat',
        method: 'POST',
        url: '/api/v1/config-servers/:id/heartbeat',
        permission: 'read',
        caller: 'server',
        summary:
          'Heartbeat of a configuration server and its process servers, optionally with a discovery report (its own server credential only); the answer says whether a refresh is requested',
        tags: ['config-servers'],
        schema: {
          params: object({ id: idString }),
          body: object(
            {
              version,
              clock,
              processServers: {
                type: 'array',
                maxItems: 64,
                items: object({ name: nameString, spoolUsedBytes: bytes, spoolLimitBytes: bytes, throughputBytesPerSec: bytes }),
              },
              discovered: {
                type: 'array',
                maxItems: MAX_DISCOVERED_MACHINES,
                items: object({ name: nameString, privateIp: machineIp, os: machineOs, kernel: machineKernel }, ['name', 'privateIp', 'os']),
              },
            },
            ['version', 'clock'],
          ),
          response: {
            200: object(
              {
                server: configServerSchema,
                processServers: { type: 'array', items: processServerSchema },
                clockSkewMs: { type: 'integer' },
                refreshRequested: { type: 'boolean' },
                discovery: object({ created: count, updated: count, unchanged: count }),
              },
              ['server', 'processServers', 'clockSkewMs', 'refreshRequested'],
            ),
          },
        },
        handler: async (req, principal) => {
          if (principal.id !== req.params.id)
            throw new LifeboatError('FORBIDDEN', `server ${principal.id} may only send its own heartbeat`, { details: { principal: `server:${principal.id}` } });
          return servers.heartbeat(req.params.id, req.body);
        },
      });

      route(app, {
        id: 'config-servers.list',
        method: 'GET',
        url: '/api/v1/config-servers',
        permission: 'read',
        summary: 'List configuration servers',
        tags: ['config-servers'],
        schema: { querystring: pageQuery, response: { 200: pageOf(configServerSchema) } },
        handler: async (req: ApiRequest<unknown, { limit: number; after?: string }>) => servers.serversPage(req.query),
      });
      route<{ id: string }>(app, {
        id: 'config-servers.show',
        method: 'GET',
        url: '/api/v1/config-servers/:id',
        permission: 'read',
        summary: 'Show a configuration server',
        tags: ['config-servers'],
        schema: { params: object({ id: idString }), response: { 200: configServerSchema } },
        handler: async (req) => servers.getServer(req.params.id),
      });
      route<{ id: string }>(app, {
        id: 'config-servers.refresh',
        method: 'POST',
        url: '/api/v1/config-servers/:id/refresh',
        permission: 'configure',
        summary: 'Ask a configuration server to re-run discovery: lastRefreshAt is the request time; its heartbeats answer refreshRequested: true until a discovery report arrives',
        tags: ['config-servers'],
        schema: { params: object({ id: idString }), body: object({}, []), response: { 200: configServerSchema } },
        handler: async (req) => servers.refresh(req.params.id),
      });
      route(app, {
        id: 'process-servers.list',
        method: 'GET',
        url: '/api/v1/process-servers',
        permission: 'read',
        summary: 'List process servers with their spool and throughput',
        tags: ['config-servers'],
        schema: { querystring: pageQuery, response: { 200: pageOf(processServerSchema) } },
        handler: async (req: ApiRequest<unknown, { limit: number; after?: string }>) => servers.processServersPage(req.query),
      });
    },
  };
}
