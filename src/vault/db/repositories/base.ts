import type { Database } from '../database.js';
import { Table, type TableSpec } from './table.js';

/** What every repository is built from: the database, the clock and the id source (both injected for tests). */
export interface RepoContext {
  readonly db: Database;
  readonly now: () => Date;
  /** A new time-ordered id (src/format/ids.ts). */
  readonly newId: () => string;
}

/** get/find/delete shared by the repositories of tables keyed by `id`. */
export class Repository<T extends { readonly id: string }> {
  protected readonly table: Table<T>;

  constructor(
    protected readonly ctx: RepoContext,
    spec: TableSpec<T>,
  ) {
    this.table = new Table(ctx.db, spec);
  }

  /** NOT_FOUND when it does not exist. */
  get(id: string): Promise<T> {
    return this.table.get(id);
  }

  find(id: string): Promise<T | undefined> {
    return this.table.find(id);
  }

  /** NOT_FOUND when it does not exist; CONFLICT while something still refers to it. */
  delete(id: string): Promise<void> {
    return this.table.delete(id);
  }

  /**
   * One page in id order (time ids: creation order), read with LIMIT in SQL so a
   * long table costs no more than its page: at most `limit` rows after `after`.
   */
  async page(where: Partial<T>, page: { readonly limit: number; readonly after?: string }): Promise<{ items: T[]; nextCursor: string | null }> {
    const rows = await this.table.list(where, {
      limit: page.limit + 1,
      ...(page.after === undefined ? {} : { extraWhere: 'id > ?', extraParams: [page.after] }),
    });
    const items = rows.slice(0, page.limit);
    return { items, nextCursor: rows.length > page.limit ? (items[items.length - 1]?.id ?? null) : null };
  }

  protected nowIso(): string {
    return this.ctx.now().toISOString();
  }
}
