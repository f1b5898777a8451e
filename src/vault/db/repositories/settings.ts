import type { RepoContext } from './base.js';

/** Vault-wide settings: JSON values under string keys. */
export class SettingsRepository {
  constructor(private readonly ctx: RepoContext) {}

  async get<T = unknown>(key: string): Promise<T | undefined> {
    const row = await this.ctx.db.one<{ value: string }>('SELECT value FROM settings WHERE key = ?', [key]);
    return row ? (JSON.parse(row.value) as T) : undefined;
  }

  /** Creates or replaces. */
  async set(key: string, value: unknown): Promise<void> {
    await this.ctx.db.run(
      'INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at',
      [key, JSON.stringify(value), this.ctx.now().toISOString()],
    );
  }

  /** False when the key was absent. */
  async delete(key: string): Promise<boolean> {
    return (await this.ctx.db.run('DELETE FROM settings WHERE key = ?', [key])).changes > 0;
  }

  async list(): Promise<Record<string, unknown>> {
    const rows = await this.ctx.db.query<{ key: string; value: string }>('SELECT key, value FROM settings ORDER BY key');
    return Object.fromEntries(rows.map((r) => [r.key, JSON.parse(r.value) as unknown]));
  }
}
