import type { ProcessServer } from '../../../core/model.js';
import { route } from '../route.js';
import type { AgentGrantAnswer, RegisterProcessServerInput, RegisteredProcessServer, StandaloneStats } from '../../services/process-servers.js';
import type { AuditRecord, RouteModule } from '../types.js';
import { processServerSchema } from './config-servers.js';
import { idString, nameString, object } from './schemas.js';

/** What the standalone process-server routes need (src/vault/services/process-servers.ts implements it). */
export interface StandaloneProcessServerService {
  register(configServerId: string, input: RegisterProcessServerInput): Promise<RegisteredProcessServer>;
  /** AGENT_UNAUTHORIZED when the machine, its certificate or its vault is not this configuration server's. */
  authorize(configServerId: string, processServerId: string, input: { machineId: string; certificateSerial: string }): Promise<AgentGrantAnswer>;
  heartbeat(configServerId: string, processServerId: string, stats: StandaloneStats, version?: string): Promise<ProcessServer>;
  storeOf(configServerId: string, processServerId: string, vaultId: string): Promise<{ storeUrl: string }>;
}

const host = { type: 'string', minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9.:\\[\\]_-]+$' };
const bytes = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER };
const version = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9.+_-]*$' };

/**
 * Standalone process servers (docs/replication.md, "Standalone process server"). Callers
 * are registered configuration servers (`caller: 'server'`, their credential as bearer
 * token); each call reaches only that configuration server's own process servers and
 * vault. POSTs are audited by the framework; the store lookup is audited here.
 */
export function processServersRoutes(service: StandaloneProcessServerService, audit: (entry: AuditRecord) => Promise<void>, now: () => Date): RouteModule {
  return {
    name: 'process-servers',
    register(app) {
      route<unknown, unknown, RegisterProcessServerInput>(app, {
        id: 'process-servers.register',
        method: 'POST',
        url: '/api/v1/process-servers',
        permission: 'read',
        caller: 'server',
        summary:
          "Register a standalone process server under the calling configuration server: the vault CA signs its CSR (serverAuth, SANs: address and sans); the same name again replaces the certificate",
        tags: ['process-servers'],
        successStatus: 201,
        schema: {
          body: object(
            {
              name: nameString,
              address: host,
              port: { type: 'integer', minimum: 1, maximum: 65535 },
              csrPem: { type: 'string', minLength: 1, maxLength: 16384 },
              sans: { type: 'array', maxItems: 16, items: host },
              version,
            },
            ['name', 'address', 'port', 'csrPem'],
          ),
          response: { 201: object({ id: idString, certificatePem: { type: 'string' }, caPem: { type: 'string' } }) },
        },
        handler: async (req, principal) => service.register(principal.id, req.body),
      });

      route<{ id: string }, unknown, { machineId: string; certificateSerial: string }>(app, {
        id: 'process-servers.authorize',
        method: 'POST',
        url: '/api/v1/process-servers/:id/authorize',
        permission: 'read',
        caller: 'server',
        summary: "May this agent certificate send to the process server? The agent's grant (item, vault, generation, disks), or AGENT_UNAUTHORIZED",
        tags: ['process-servers'],
        schema: {
          params: object({ id: idString }),
          body: object({ machineId: idString, certificateSerial: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[0-9A-Fa-f]+$' } }),
          response: {
            200: object({
              machineId: idString,
              itemId: idString,
              vaultId: idString,
              generation: { type: 'integer' },
              disks: { type: 'array', items: { type: 'string' } },
            }),
          },
        },
        handler: async (req, principal) => service.authorize(principal.id, req.params.id, req.body),
      });

      route<{ id: string }, unknown, { stats: StandaloneStats; version?: string }>(app, {
        id: 'process-servers.heartbeat',
        method: 'POST',
        url: '/api/v1/process-servers/:id/heartbeat',
        permission: 'read',
        caller: 'server',
        summary: "A standalone process server's figures: spool, throughput, health and heartbeat time are recorded on its row",
        tags: ['process-servers'],
        schema: {
          params: object({ id: idString }),
          body: object(
            {
              stats: object({
                bytesIn: bytes,
                segmentsIn: bytes,
                segmentsUploaded: bytes,
                spoolUsedBytes: bytes,
                spoolLimitBytes: bytes,
                spooledSegments: bytes,
                uploadLagMs: bytes,
                connectedAgents: bytes,
                uploadErrors: bytes,
              }),
              version,
            },
            ['stats'],
          ),
          response: { 200: processServerSchema },
        },
        handler: async (req, principal) => service.heartbeat(principal.id, req.params.id, req.body.stats, req.body.version),
      });

      route<{ id: string; vaultId: string }>(app, {
        id: 'process-servers.store',
        method: 'GET',
        url: '/api/v1/process-servers/:id/vaults/:vaultId/store',
        permission: 'read',
        caller: 'server',
        summary: "Where the vault's store is (its URL only: the store passphrase is given to the process server by its operator)",
        tags: ['process-servers'],
        schema: {
          params: object({ id: idString, vaultId: idString }),
          response: { 200: object({ storeUrl: { type: 'string' } }) },
        },
        handler: async (req, principal) => {
          const record = (outcome: AuditRecord['outcome']) =>
            audit({ at: now().toISOString(), actor: principal.id, action: 'process-servers.store', target: req.params.id, outcome, requestId: req.id });
          try {
            const answer = await service.storeOf(principal.id, req.params.id, req.params.vaultId);
            await record('allowed');
            return answer;
          } catch (err) {
            await record('denied');
            throw err;
          }
        },
      });
    },
  };
}
