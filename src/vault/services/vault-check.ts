import { randomBytes } from 'node:crypto';
import { asLifeboatError } from '../../core/errors.js';
import type { Repositories } from '../db/repositories/index.js';
import { openStorage } from '../../storage/registry.js';

export interface VaultCheckResult {
  readonly vaultId: string;
  readonly checkedAt: string;
  /** Both parts ok: replication may start. */
  readonly ok: boolean;
  readonly store: { readonly ok: boolean; readonly error?: string; readonly code?: string };
  readonly recoveryNetwork: { readonly ok: boolean; readonly reason: string };
}

/** Probe objects live under this prefix of the target store and are deleted right away. */
export const PROBE_PREFIX = 'probes/';

/**
 * Seed step 4: before replication may start, the vault proves its target store is
 * reachable and usable — it writes, reads back and deletes a probe object — and that
 * a recovery network is configured (whether it exists is the compute driver's to
 * say, later). The last result is kept in settings as `vault-check:<vaultId>`.
 */
export class VaultChecks {
  constructor(
    private readonly repos: Repositories,
    private readonly now: () => Date,
    private readonly env: Readonly<Record<string, string | undefined>> = process.env,
  ) {}

  async check(vaultId: string): Promise<VaultCheckResult> {
    const vault = await this.repos.vaults.get(vaultId);
    const store = await this.probe(vault.storeUrl);
    const recoveryNetwork =
      vault.recoveryNetwork === null
        ? { ok: false, reason: 'no recovery network is configured for this vault' }
        : { ok: true, reason: `recovery network '${vault.recoveryNetwork}' is configured` };
    const result: VaultCheckResult = { vaultId, checkedAt: this.now().toISOString(), ok: store.ok && recoveryNetwork.ok, store, recoveryNetwork };
    await this.repos.settings.set(`vault-check:${vaultId}`, result);
    return result;
  }

  private async probe(url: string): Promise<VaultCheckResult['store']> {
    const key = `${PROBE_PREFIX}${this.now().getTime()}-${randomBytes(8).toString('hex')}`;
    const data = randomBytes(64);
    try {
      // One extra attempt at most: an operator is waiting for the answer.
      const storage = await openStorage(url, { env: this.env, retry: { maxAttempts: 2 } });
      try {
        await storage.put(key, data);
        const back = await storage.get(key);
        await storage.delete(key);
        if (!back.equals(data)) return { ok: false, code: 'CORRUPT_OBJECT', error: 'the probe object read back differs from what was written' };
        return { ok: true };
      } finally {
        await storage.close();
      }
    } catch (err) {
      const e = asLifeboatError(err, 'STORAGE_UNAVAILABLE');
      return { ok: false, code: e.code, error: e.message };
    }
  }
}
