import type { Alert, AlertKind, AlertSeverity } from '../../../core/model.js';
import { isLifeboatError } from '../../../core/errors.js';
import { Repository, type RepoContext } from './base.js';

/**
 * Alerts. At most one alert per (kind, subject) is open at a time (a partial
 * unique index enforces it): raising again returns the open one, with its
 * severity and message brought up to date, and keeps its id and raisedAt.
 */
export class AlertRepository extends Repository<Alert> {
  constructor(ctx: RepoContext) {
    super(ctx, {
      table: 'alerts',
      noun: 'alert',
      columns: { id: 'text', kind: 'text', severity: 'text', subjectId: 'text', message: 'text', raisedAt: 'text', clearedAt: 'text' },
    });
  }

  /** Raises the alert, or refreshes the one already open for this kind and subject. */
  async raise(input: { kind: AlertKind; subjectId: string; severity: AlertSeverity; message: string }): Promise<Alert> {
    for (let attempt = 0; ; attempt++) {
      const open = await this.findOpen(input.kind, input.subjectId);
      if (open) {
        if (open.severity === input.severity && open.message === input.message) return open;
        const refreshed = await this.table.updateWhere(open.id, { severity: input.severity, message: input.message }, { sql: 'cleared_at IS NULL', params: [] });
        if (refreshed) return { ...open, severity: input.severity, message: input.message };
        continue; // cleared in between: raise a new one
      }
      try {
        return await this.table.insert({
          id: this.ctx.newId(),
          kind: input.kind,
          severity: input.severity,
          subjectId: input.subjectId,
          message: input.message,
          raisedAt: this.nowIso(),
          clearedAt: null,
        });
      } catch (err) {
        // Another raiser won the race: its open alert is the one to return.
        if (!isLifeboatError(err, 'CONFLICT') || attempt >= 3) throw err;
      }
    }
  }

  async findOpen(kind: AlertKind, subjectId: string): Promise<Alert | undefined> {
    return (await this.table.list({ kind, subjectId, clearedAt: null }))[0];
  }

  /** Clears the open alert of this kind and subject; false when none was open (idempotent). */
  async clear(kind: AlertKind, subjectId: string): Promise<boolean> {
    const result = await this.ctx.db.run('UPDATE alerts SET cleared_at = ? WHERE kind = ? AND subject_id = ? AND cleared_at IS NULL', [
      this.nowIso(),
      kind,
      subjectId,
    ]);
    return result.changes > 0;
  }

  /** Oldest first. `open: true` lists alerts not yet cleared, `false` only cleared ones. */
  list(filter: { open?: boolean; kind?: AlertKind; subjectId?: string; limit?: number } = {}): Promise<Alert[]> {
    const { open, limit, ...where } = filter;
    const extraWhere = open === undefined ? undefined : open ? 'cleared_at IS NULL' : 'cleared_at IS NOT NULL';
    return this.table.list(where, { ...(extraWhere ? { extraWhere } : {}), ...(limit === undefined ? {} : { limit }) });
  }
}
