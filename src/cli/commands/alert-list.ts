import type { Command } from 'commander';
import type { Alert } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { table } from '../table.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'list', 'list open alerts (--all for cleared ones too)')
    .option('--all', 'include cleared alerts')
    .action(async (opts: ApiFlags & { all?: boolean }) => {
      const client = connect(opts, env);
      const alerts: Alert[] = [];
      let after: string | undefined;
      do {
        const page = await client.get<{ items: Alert[]; nextCursor: string | null }>('/api/v1/alerts', { status: opts.all ? 'all' : undefined, after });
        alerts.push(...page.items);
        after = page.nextCursor ?? undefined;
      } while (after);
      emit(
        opts,
        env,
        alerts,
        table(['id', 'severity', 'kind', 'subject', 'raised', 'cleared', 'message'], alerts.map((a) => [a.id, a.severity, a.kind, a.subjectId, a.raisedAt, a.clearedAt, a.message]), 'no alerts'),
      );
    });
}
