import type { RegistrationKey } from '../../../core/model.js';
import { route } from '../route.js';
import type { RouteModule } from '../types.js';
import { idString, object, timestamp } from './schemas.js';

/** What the registration-key routes need (seed step 3: download a key valid 5 days). */
export interface RegistrationKeyService {
  /** The key text is in this answer only; the vault keeps its hash. */
  createKey(vaultId: string): Promise<RegistrationKey & { key: string }>;
  listKeys(vaultId: string): Promise<readonly RegistrationKey[]>;
  revokeKey(vaultId: string, keyId: string): Promise<void>;
}

/** The public view of a key: never its text, never its hash. */
export const registrationKeySchema = object({ id: idString, vaultId: idString, createdAt: timestamp, expiresAt: timestamp, revoked: { type: 'boolean' } });

export function registrationKeysRoutes(keys: RegistrationKeyService): RouteModule {
  return {
    name: 'registration-keys',
    register(app) {
      route<{ id: string }>(app, {
        id: 'registration-keys.create',
        method: 'POST',
        url: '/api/v1/vaults/:id/registration-keys',
        permission: 'configure',
        summary: 'Issue a registration key for configuration servers of this vault (valid 5 days); the key text is in this response only',
        tags: ['registration-keys'],
        successStatus: 201,
        schema: {
          params: object({ id: idString }),
          body: object({}, []),
          response: { 201: object({ id: idString, vaultId: idString, createdAt: timestamp, expiresAt: timestamp, key: { type: 'string' } }) },
        },
        handler: async (req) => keys.createKey(req.params.id),
      });
      route<{ id: string }>(app, {
        id: 'registration-keys.list',
        method: 'GET',
        url: '/api/v1/vaults/:id/registration-keys',
        permission: 'read',
        summary: "List a vault's registration keys (never their text)",
        tags: ['registration-keys'],
        schema: { params: object({ id: idString }), response: { 200: object({ items: { type: 'array', items: registrationKeySchema } }) } },
        handler: async (req) => ({ items: await keys.listKeys(req.params.id) }),
      });
      route<{ id: string; keyId: string }>(app, {
        id: 'registration-keys.revoke',
        method: 'DELETE',
        url: '/api/v1/vaults/:id/registration-keys/:keyId',
        permission: 'configure',
        summary: 'Revoke a registration key: configuration servers can no longer register with it',
        tags: ['registration-keys'],
        successStatus: 204,
        schema: { params: object({ id: idString, keyId: idString }) },
        handler: async (req) => {
          await keys.revokeKey(req.params.id, req.params.keyId);
          return undefined;
        },
      });
    },
  };
}
