import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields } from '../table.js';

interface VaultCheck {
  vaultId: string;
  checkedAt: string;
  ok: boolean;
  store: { ok: boolean; error?: string; code?: string };
  recoveryNetwork: { ok: boolean; reason?: string };
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'check <vault>', 'check that the vault reaches its store and recovery network (seed step 4), by id or name; exits non-zero when not').action(
    async (ref: string, opts: ApiFlags) => {
      const client = connect(opts, env);
      const id = await resolveRef(client, '/api/v1/vaults', 'vault', ref);
      const r = await client.post<VaultCheck>(`/api/v1/vaults/${encodeURIComponent(id)}/check`);
      emit(
        opts,
        env,
        r,
        fields([
          ['vault', r.vaultId],
          ['checked', r.checkedAt],
          ['store', r.store.ok ? 'ok' : `FAILED: ${r.store.code ?? ''} ${r.store.error ?? ''}`.trim()],
          ['recovery network', r.recoveryNetwork.ok ? 'ok' : `FAILED: ${r.recoveryNetwork.reason ?? ''}`],
          ['ready', r.ok ? 'yes' : 'no'],
        ]),
      );
      if (!r.ok)
        throw new LifeboatError(r.store.ok ? 'CONFIG_INVALID' : 'STORAGE_UNAVAILABLE', `vault ${id} is not ready for replication`, {
          details: { reported: true },
          retryable: !r.store.ok,
        });
    },
  );
}
