import type { RepoContext } from './base.js';

/** One measurement of an item's RPO (src/vault/services/rpo-history.ts). */
export interface RpoSample {
  readonly itemId: string;
  /** ISO-8601 UTC. */
  readonly at: string;
  readonly rpoSeconds: number;
}

/** The RPO of items over time: appended by the sampler, read by the portal's chart, pruned by age. */
export class RpoSampleRepository {
  constructor(private readonly ctx: RepoContext) {}

  /** Appends the samples in one transaction. */
  async append(samples: readonly RpoSample[]): Promise<void> {
    if (samples.length === 0) return;
    await this.ctx.db.transaction(async (tx) => {
      for (const s of samples) await tx.run('INSERT INTO rpo_samples (item_id, at, rpo_seconds) VALUES (?, ?, ?)', [s.itemId, s.at, s.rpoSeconds]);
    });
  }

  /** The item's samples taken at or after `since` (ISO-8601), oldest first. */
  async list(itemId: string, since: string): Promise<RpoSample[]> {
    const rows = await this.ctx.db.query<{ at: string; rpo_seconds: number | string }>(
      'SELECT at, rpo_seconds FROM rpo_samples WHERE item_id = ? AND at >= ? ORDER BY at',
      [itemId, since],
    );
    return rows.map((r) => ({ itemId, at: r.at, rpoSeconds: Number(r.rpo_seconds) }));
  }

  /** Deletes every sample taken before `before` (ISO-8601); returns how many went. */
  async deleteBefore(before: string): Promise<number> {
    return (await this.ctx.db.run('DELETE FROM rpo_samples WHERE at < ?', [before])).changes;
  }
}
