import type { Machine, PushAccount } from '../../../core/model.js';
import { LifeboatError } from '../../../core/errors.js';
import { Repository, type RepoContext } from './base.js';

export class MachineRepository extends Repository<Machine> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'machines',
      noun: 'machine',
      columns: {
        id: 'text',
        configServerId: 'text',
        name: 'text',
        privateIp: 'text',
        os: 'text',
        kernel: 'text',
        discovered: 'bool',
        supported: 'bool',
        supportReason: 'text',
        createdAt: 'text',
      },
    });
  }

  /** CONFLICT when the configuration server already has a machine of that name. */
  create(
    input: Pick<Machine, 'configServerId' | 'name' | 'privateIp' | 'os'> &
      Partial<Pick<Machine, 'kernel' | 'discovered' | 'supported' | 'supportReason'>>,
  ): Promise<Machine> {
    return this.table.insert({
      id: this.ctx.newId(),
      configServerId: input.configServerId,
      name: input.name,
      privateIp: input.privateIp,
      os: input.os,
      kernel: input.kernel ?? null,
      discovered: input.discovered ?? false,
      supported: input.supported ?? null,
      supportReason: input.supportReason ?? null,
      createdAt: this.nowIso(),
    });
  }

  async findByName(configServerId: string, name: string): Promise<Machine | undefined> {
    return (await this.table.list({ configServerId, name }))[0];
  }

  list(filter: { configServerId?: string; supported?: boolean | null } = {}): Promise<Machine[]> {
    return this.table.list(filter);
  }

  update(
    id: string,
    patch: Partial<Pick<Machine, 'name' | 'privateIp' | 'os' | 'kernel' | 'discovered' | 'supported' | 'supportReason'>>,
  ): Promise<Machine> {
    return this.table.update(id, patch);
  }
}

/**
 * Push-install accounts. The secret arrives already encrypted (the vault's
 * secret box does that); this layer stores and returns opaque bytes and never
 * puts them in the model object.
 */
export class PushAccountRepository extends Repository<PushAccount> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'push_accounts',
      noun: 'push account',
      columns: { id: 'text', configServerId: 'text', name: 'text', username: 'text', kind: 'text', createdAt: 'text' },
    });
  }

  create(input: Pick<PushAccount, 'configServerId' | 'name' | 'username' | 'kind'> & { encryptedSecret: Uint8Array }): Promise<PushAccount> {
    return this.table.insert(
      {
        id: this.ctx.newId(),
        configServerId: input.configServerId,
        name: input.name,
        username: input.username,
        kind: input.kind,
        createdAt: this.nowIso(),
      },
      { encrypted_secret: Buffer.from(input.encryptedSecret) },
    );
  }

  /** The stored ciphertext; NOT_FOUND for an unknown account. */
  async getEncryptedSecret(id: string): Promise<Buffer> {
    const row = await this.ctx.db.one<{ encrypted_secret: Uint8Array }>('SELECT encrypted_secret FROM push_accounts WHERE id = ?', [id]);
    if (!row) throw this.table.notFound(id);
    return Buffer.from(row.encrypted_secret);
  }

  async findByName(configServerId: string, name: string): Promise<PushAccount | undefined> {
    return (await this.table.list({ configServerId, name }))[0];
  }

  list(filter: { configServerId?: string } = {}): Promise<PushAccount[]> {
    return this.table.list(filter);
  }

  /** Replaces name, username, kind and/or the ciphertext. */
  async update(
    id: string,
    patch: Partial<Pick<PushAccount, 'name' | 'username' | 'kind'>> & { encryptedSecret?: Uint8Array },
  ): Promise<PushAccount> {
    const { encryptedSecret, ...fields } = patch;
    return this.ctx.db.transaction(async () => {
      const updated = await this.table.update(id, fields);
      if (encryptedSecret !== undefined) {
        if (encryptedSecret.length === 0) throw new LifeboatError('USAGE', 'an encrypted secret cannot be empty');
        await this.ctx.db.run('UPDATE push_accounts SET encrypted_secret = ? WHERE id = ?', [Buffer.from(encryptedSecret), id]);
      }
      return updated;
    });
  }
}
