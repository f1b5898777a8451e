import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { openStorage } from '../../storage/registry.js';
import { Repository } from '../../store/repository.js';
import type { Repositories } from '../db/repositories/index.js';
import { registerSecret } from '../secrets/redact.js';
import type { SecretBox } from '../secrets/secret-box.js';

/**
 * The vault's access to the stores of its vaults (replication writes segments and
 * points there). Each vault's store passphrase is write-only: given at vault
 * creation, sealed with the vault key under the context `store-passphrase:<vaultId>`
 * (also the settings key, so a sealed value moved to another vault's row fails to
 * open), never returned, logged or audited. The stores are opened once and cached.
 */

export function storePassphraseKey(vaultId: string): string {
  return `store-passphrase:${vaultId}`;
}

export interface VaultStoresOptions {
  /** scrypt cost for new stores (tests lower it); default the store's own default. */
  readonly scrypt?: { N: number; r: number; p: number };
  /** Environment for storage credentials; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export class VaultStores {
  private readonly open = new Map<string, Promise<Repository>>();

  constructor(
    private readonly repos: Repositories,
    private readonly box: SecretBox,
    private readonly options: VaultStoresOptions = {},
  ) {}

  /**
   * Initialises the store at `storeUrl` with `passphrase` when it has none, or checks that
   * the passphrase opens the store already there (WRONG_PASSPHRASE otherwise). Returns the
   * recovery key when this call created the store (shown once, never kept).
   */
  async prepareStore(storeUrl: string, passphrase: string): Promise<{ recoveryKey: string | undefined }> {
    registerSecret(passphrase);
    if (passphrase.length === 0) throw new LifeboatError('PASSPHRASE_REQUIRED', 'an empty store passphrase is refused');
    const storage = await openStorage(storeUrl, this.storageOptions());
    try {
      const { recoveryKey } = await Repository.init(storage, { passphrase, ...(this.options.scrypt ? { scrypt: this.options.scrypt } : {}) });
      registerSecret(recoveryKey);
      return { recoveryKey };
    } catch (err) {
      if (!isLifeboatError(err, 'STORE_EXISTS')) throw err;
      await Repository.open(storage, passphrase); // WRONG_PASSPHRASE when it is another store's
      return { recoveryKey: undefined };
    }
  }

  /** Seals and keeps the passphrase of `vaultId` (inside the caller's transaction, if any). */
  async remember(vaultId: string, passphrase: string): Promise<void> {
    const key = storePassphraseKey(vaultId);
    await this.repos.settings.set(key, this.box.seal(passphrase, key));
    this.open.delete(vaultId);
  }

  async hasPassphrase(vaultId: string): Promise<boolean> {
    return typeof (await this.repos.settings.get(storePassphraseKey(vaultId))) === 'string';
  }

  /** The vault's store, opened and unlocked (cached). CONFIG_INVALID when the vault has no store passphrase. */
  openVaultStore(vaultId: string): Promise<Repository> {
    const cached = this.open.get(vaultId);
    if (cached) return cached;
    const opening = this.openNow(vaultId);
    this.open.set(vaultId, opening);
    opening.catch(() => this.open.delete(vaultId));
    return opening;
  }

  private async openNow(vaultId: string): Promise<Repository> {
    const vault = await this.repos.vaults.get(vaultId);
    const key = storePassphraseKey(vaultId);
    const sealed = await this.repos.settings.get<string>(key);
    if (typeof sealed !== 'string') throw noPassphrase(vault.name);
    const passphrase = this.box.open(sealed, key);
    registerSecret(passphrase);
    return Repository.open(await openStorage(vault.storeUrl, this.storageOptions()), passphrase);
  }

  private storageOptions(): { env?: Readonly<Record<string, string | undefined>> } {
    return this.options.env ? { env: this.options.env } : {};
  }
}

export function noPassphrase(vaultName: string): LifeboatError {
  return new LifeboatError(
    'CONFIG_INVALID',
    `vault ${vaultName} has no store passphrase, so replication cannot write to its store; create the vault with a store passphrase (lifeboat vault create --passphrase-file FILE)`,
    { details: { vault: vaultName } },
  );
}
