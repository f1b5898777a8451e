import type { Vault } from '../../../core/model.js';
import { route } from '../route.js';
import type { Page, PageRequest } from '../services.js';
import type { RouteModule } from '../types.js';
import { idString, nameString, object, pageOf, pageQuery, timestamp } from './schemas.js';

/** What the vaults routes need (seed step 2: create a vault and choose its target storage). */
export interface VaultService {
  list(page: PageRequest): Promise<Page<Vault>>;
  get(id: string): Promise<Vault>;
  /** `storeRecoveryKey` only when the vault created the store with `storePassphrase` (shown once). */
  create(input: VaultInput): Promise<Vault & { storeRecoveryKey?: string }>;
}

export interface VaultInput {
  name: string;
  location: string;
  storeUrl: string;
  recoveryNetwork?: string | null;
  /** Write-only: sealed by the vault, never returned. Replication needs it. */
  storePassphrase?: string;
}

const storeUrl = { type: 'string', minLength: 1, maxLength: 2048, pattern: '^(file|azblob|s3)://' };
const location = { type: 'string', minLength: 1, maxLength: 100 };
const network = { type: 'string', minLength: 1, maxLength: 100, nullable: true };
export const vaultSchema = object({ id: idString, name: nameString, location, storeUrl, recoveryNetwork: network, createdAt: timestamp });

export function vaultsRoutes(vaults: VaultService): RouteModule {
  return {
    name: 'vaults',
    register(app) {
      route<unknown, { limit: number; after?: string }>(app, {
        id: 'vaults.list',
        method: 'GET',
        url: '/api/v1/vaults',
        permission: 'read',
        summary: 'List vaults',
        tags: ['vaults'],
        schema: { querystring: pageQuery, response: { 200: pageOf(vaultSchema) } },
        handler: async (req) => vaults.list({ limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}) }),
      });
      route<{ id: string }>(app, {
        id: 'vaults.show',
        method: 'GET',
        url: '/api/v1/vaults/:id',
        permission: 'read',
        summary: 'Show a vault',
        tags: ['vaults'],
        schema: { params: object({ id: idString }), response: { 200: vaultSchema } },
        handler: async (req) => vaults.get(req.params.id),
      });
      route<unknown, unknown, VaultInput>(app, {
        id: 'vaults.create',
        method: 'POST',
        url: '/api/v1/vaults',
        permission: 'configure',
        summary: 'Create a vault with its target store; with storePassphrase (write-only) the vault initialises the store and keeps the passphrase sealed',
        tags: ['vaults'],
        successStatus: 201,
        schema: {
          body: object({ name: nameString, location, storeUrl, recoveryNetwork: network, storePassphrase: { type: 'string', minLength: 1, maxLength: 1024 } }, [
            'name',
            'location',
            'storeUrl',
          ]),
          response: {
            201: { ...vaultSchema, properties: { ...(vaultSchema.properties as object), storeRecoveryKey: { type: 'string' } } },
          },
        },
        handler: async (req) => vaults.create(req.body),
      });
    },
  };
}
