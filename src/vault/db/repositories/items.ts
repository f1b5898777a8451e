import type { ItemState, ReplicatedItem } from '../../../core/model.js';
import { Repository, type RepoContext } from './base.js';

/** Fields of an item that change without a state transition. */
export type ItemPatch = Partial<
  Pick<ReplicatedItem, 'policyId' | 'processServerId' | 'initialReplicationPercent' | 'rpoSeconds' | 'compute' | 'disks' | 'generation'>
>;

/**
 * Replicated items. State changes go through updateState(), a compare-and-set:
 * two operations racing on one item (a failover and a drill) cannot both win.
 * Every write sets `updatedAt`.
 */
export class ItemRepository extends Repository<ReplicatedItem> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'items',
      noun: 'replicated item',
      columns: {
        id: 'text',
        vaultId: 'text',
        machineId: 'text',
        policyId: 'text',
        processServerId: 'text',
        state: 'text',
        initialReplicationPercent: 'int',
        rpoSeconds: 'int',
        compute: 'json',
        disks: 'json',
        generation: 'int',
        createdAt: 'text',
        updatedAt: 'text',
      },
    });
  }

  /** A new item in state `enabling`. CONFLICT when the machine is already protected. */
  create(
    input: Pick<ReplicatedItem, 'vaultId' | 'machineId' | 'policyId' | 'compute' | 'disks'> &
      Partial<Pick<ReplicatedItem, 'processServerId' | 'state'>>,
  ): Promise<ReplicatedItem> {
    const now = this.nowIso();
    return this.table.insert({
      id: this.ctx.newId(),
      vaultId: input.vaultId,
      machineId: input.machineId,
      policyId: input.policyId,
      processServerId: input.processServerId ?? null,
      state: input.state ?? 'enabling',
      initialReplicationPercent: 0,
      rpoSeconds: null,
      compute: input.compute,
      disks: input.disks,
      generation: 0,
      createdAt: now,
      updatedAt: now,
    });
  }

  async findByMachine(machineId: string): Promise<ReplicatedItem | undefined> {
    return (await this.table.list({ machineId }))[0];
  }

  list(filter: { vaultId?: string; state?: ItemState; policyId?: string; processServerId?: string } = {}): Promise<ReplicatedItem[]> {
    return this.table.list(filter);
  }

  /** Updates fields other than the state; NOT_FOUND for an unknown item. */
  update(id: string, patch: ItemPatch): Promise<ReplicatedItem> {
    return this.table.update(id, { ...patch, updatedAt: this.nowIso() });
  }

  /**
   * Moves the item from `from` to `to` (and applies `patch` in the same
   * statement) only if its state is still `from`. Returns false, changing
   * nothing, when the state was something else; NOT_FOUND when there is no item.
   */
  async updateState(id: string, from: ItemState, to: ItemState, patch: ItemPatch = {}): Promise<boolean> {
    const changed = await this.table.updateWhere(id, { ...patch, state: to, updatedAt: this.nowIso() }, { sql: 'state = ?', params: [from] });
    if (!changed && !(await this.table.find(id))) throw this.table.notFound(id);
    return changed;
  }
}
