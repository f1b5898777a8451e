import { route } from '../route.js';
import type { RouteModule } from '../types.js';
import { idString, object, timestamp } from './schemas.js';

/** Seed step 4: the vault checks its target store and recovery network before replication starts. */
export interface VaultCheckService {
  check(vaultId: string): Promise<unknown>;
}

const checkSchema = object({
  vaultId: idString,
  checkedAt: timestamp,
  ok: { type: 'boolean' },
  store: object({ ok: { type: 'boolean' }, error: { type: 'string' }, code: { type: 'string' } }, ['ok']),
  recoveryNetwork: object({ ok: { type: 'boolean' }, reason: { type: 'string' } }),
});

export function vaultCheckRoutes(checks: VaultCheckService): RouteModule {
  return {
    name: 'vault-check',
    register(app) {
      route<{ id: string }>(app, {
        id: 'vaults.check',
        method: 'POST',
        url: '/api/v1/vaults/:id/check',
        permission: 'configure',
        summary: 'Check that the target store is reachable and usable (probe write, read, delete) and that a recovery network is set',
        tags: ['vaults'],
        schema: { params: object({ id: idString }), body: object({}, []), response: { 200: checkSchema } },
        handler: async (req) => checks.check(req.params.id),
      });
    },
  };
}
