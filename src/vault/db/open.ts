import { isAbsolute } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import { redactUrl, type Database } from './database.js';
import { migrate } from './migrations.js';
import { PostgresDatabase } from './postgres.js';
import { SqliteDatabase } from './sqlite.js';

export interface OpenOptions {
  /** Apply pending migrations (default true). With false the schema is not even checked. */
  readonly migrate?: boolean;
  /** Clock for `schema_migrations.applied_at`. */
  readonly now?: () => Date;
}

/**
 * The one place a database URL becomes a driver:
 * - `sqlite:///absolute/path/vault.db` — a file (its folder is created);
 * - `sqlite::memory:` — a private in-memory database (tests);
 * - `postgres://user:password@host:port/database` (or `postgresql://`).
 * Any other scheme is CONFIG_INVALID. Migrations are applied before it returns;
 * on any failure the connection is closed again.
 */
export async function openDatabase(url: string, options: OpenOptions = {}): Promise<Database> {
  const db = await connect(url);
  if (options.migrate === false) return db;
  try {
    await migrate(db, undefined, options.now);
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
  return db;
}

async function connect(url: string): Promise<Database> {
  if (url === 'sqlite::memory:') return SqliteDatabase.open(':memory:');
  if (url.startsWith('sqlite:')) {
    const match = /^sqlite:\/\/(\/[^?#]*)$/.exec(url);
    const path = match?.[1] === undefined ? undefined : decodeURIComponent(match[1]);
    if (path === undefined || !isAbsolute(path) || path.endsWith('/')) {
      throw new LifeboatError('CONFIG_INVALID', `a SQLite database URL is sqlite:///absolute/path.db or sqlite::memory:, not ${url}`, {
        details: { url },
      });
    }
    return SqliteDatabase.open(path, url);
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return PostgresDatabase.open(url);
  throw new LifeboatError('CONFIG_INVALID', `no vault database driver for ${redactUrl(url)} (use sqlite:///path.db or postgres://…)`, {
    details: { url: redactUrl(url) },
  });
}
