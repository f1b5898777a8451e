import type { AuditEntry } from '../../../core/model.js';
import type { SqlParam } from '../database.js';
import { Table } from './table.js';
import type { RepoContext } from './base.js';

/** The append-only audit log: entries are never updated or deleted through this interface. */
export class AuditLogRepository {
  private readonly table: Table<AuditEntry>;

  constructor(private readonly ctx: RepoContext) {
    this.table = new Table<AuditEntry>(ctx.db, {
      table: 'audit_log',
      noun: 'audit entry',
      columns: { id: 'text', at: 'text', actor: 'text', action: 'text', target: 'text', outcome: 'text', requestId: 'text' },
    });
  }

  append(entry: Omit<AuditEntry, 'id' | 'at' | 'target' | 'requestId'> & Partial<Pick<AuditEntry, 'target' | 'requestId'>>): Promise<AuditEntry> {
    return this.table.insert({
      id: this.ctx.newId(),
      at: this.ctx.now().toISOString(),
      actor: entry.actor,
      action: entry.action,
      target: entry.target ?? null,
      outcome: entry.outcome,
      requestId: entry.requestId ?? null,
    });
  }

  /**
   * Newest first, at most `limit` (default 100) entries; `before` (an entry id)
   * continues a previous page.
   */
  async list(filter: { actor?: string; target?: string; before?: string; limit?: number } = {}): Promise<AuditEntry[]> {
    const where: string[] = [];
    const params: SqlParam[] = [];
    if (filter.actor !== undefined) {
      where.push('actor = ?');
      params.push(filter.actor);
    }
    if (filter.target !== undefined) {
      where.push('target = ?');
      params.push(filter.target);
    }
    if (filter.before !== undefined) {
      where.push('id < ?');
      params.push(filter.before);
    }
    const limit = Math.max(0, Math.floor(filter.limit ?? 100));
    const rows = await this.ctx.db.query(
      `SELECT ${this.table.selectList} FROM audit_log${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ${limit}`,
      params,
    );
    return rows.map((r) => this.table.fromRow(r));
  }
}
