import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { LifeboatError } from '../../core/errors.js';
import {
  Mutex,
  bindParams,
  toLifeboatError,
  type Database,
  type NativeErrorKind,
  type Row,
  type RunResult,
  type SqlParam,
} from './database.js';

/** How long a statement waits for another process's write lock before DB_UNAVAILABLE. */
const BUSY_TIMEOUT_MS = 10_000;

interface TxState {
  active: boolean;
}

/**
 * The embedded driver: one better-sqlite3 connection (WAL journal, foreign keys
 * on, busy timeout). better-sqlite3 is synchronous, so one statement never
 * interleaves with another; an async transaction holds a lock that every
 * statement outside it waits for, so nothing outside a transaction sees or joins
 * its uncommitted writes. BEGIN IMMEDIATE takes SQLite's write lock up front, which
 * makes transactions serializable across processes too.
 */
export class SqliteDatabase implements Database {
  readonly dialect = 'sqlite' as const;
  private readonly lock = new Mutex();
  private readonly context = new AsyncLocalStorage<TxState>();
  private readonly statements = new Map<string, BetterSqlite3.Statement>();
  private closed = false;

  private constructor(
    private readonly db: BetterSqlite3.Database,
    readonly url: string,
  ) {}

  /** Opens `path` (created with its folder if missing) or ':memory:'. */
  static open(path: string, url = path === ':memory:' ? 'sqlite::memory:' : `sqlite://${path}`): SqliteDatabase {
    let db: BetterSqlite3.Database;
    try {
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
      db = new BetterSqlite3(path, { timeout: BUSY_TIMEOUT_MS });
    } catch (err) {
      throw new LifeboatError('DB_UNAVAILABLE', `cannot open SQLite database ${path}: ${(err as Error).message}`, {
        cause: err,
        retryable: false,
        details: { path },
      });
    }
    try {
      if (path !== ':memory:') db.pragma('journal_mode = WAL');
      // A DR tool's source of truth: a committed transaction survives power loss.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    } catch (err) {
      db.close();
      throw translate(err, 'PRAGMA', path);
    }
    return new SqliteDatabase(db, url);
  }

  query<T = Row>(sql: string, params: readonly SqlParam[] = []): Promise<T[]> {
    return this.exclusive(sql, () => {
      const stmt = this.prepare(sql);
      const bound = bindParams(params);
      if (stmt.reader) return stmt.all(...bound) as T[];
      stmt.run(...bound);
      return [];
    });
  }

  async one<T = Row>(sql: string, params: readonly SqlParam[] = []): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0];
  }

  run(sql: string, params: readonly SqlParam[] = []): Promise<RunResult> {
    return this.exclusive(sql, () => ({ changes: this.prepare(sql).run(...bindParams(params)).changes }));
  }

  exec(script: string): Promise<void> {
    return this.exclusive(script, () => {
      this.db.exec(script);
    });
  }

  async transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    const current = this.context.getStore();
    if (current) {
      this.checkActive(current);
      return fn(this);
    }
    this.checkOpen();
    const release = await this.lock.lock();
    const state: TxState = { active: true };
    try {
      this.checkOpen();
      this.sync('BEGIN IMMEDIATE', () => this.db.exec('BEGIN IMMEDIATE'));
      const result = await this.context.run(state, () => fn(this));
      this.sync('COMMIT', () => this.db.exec('COMMIT'));
      return result;
    } finally {
      // fn threw or COMMIT failed: nothing of it stays.
      if (this.db.open && this.db.inTransaction) this.db.exec('ROLLBACK');
      state.active = false;
      release();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const release = await this.lock.lock();
    try {
      this.closed = true;
      this.statements.clear();
      this.db.close();
    } finally {
      release();
    }
  }

  /** Runs a synchronous statement inside the current transaction, or alone under the lock. */
  private async exclusive<T>(sql: string, body: () => T): Promise<T> {
    const current = this.context.getStore();
    if (current) {
      this.checkActive(current);
      return this.sync(sql, body);
    }
    this.checkOpen();
    const release = await this.lock.lock();
    try {
      this.checkOpen();
      return this.sync(sql, body);
    } finally {
      release();
    }
  }

  private sync<T>(sql: string, body: () => T): T {
    try {
      return body();
    } catch (err) {
      throw translate(err, sql, this.url);
    }
  }

  private prepare(sql: string): BetterSqlite3.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  private checkOpen(): void {
    if (this.closed) throw new LifeboatError('INTERNAL', `database ${this.url} is closed`);
  }

  private checkActive(state: TxState): void {
    if (!state.active) throw new LifeboatError('INTERNAL', 'statement issued from a transaction that has already ended');
  }
}

function translate(err: unknown, sql: string, where: string): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const code = (err as { code?: unknown }).code;
  const c = typeof code === 'string' ? code : '';
  if (c === 'SQLITE_NOTADB') {
    return new LifeboatError('CONFIG_INVALID', `${where} is not a SQLite database`, { cause: err });
  }
  let kind: NativeErrorKind = 'other';
  if (c === 'SQLITE_CONSTRAINT_UNIQUE' || c === 'SQLITE_CONSTRAINT_PRIMARYKEY') kind = 'unique';
  else if (c === 'SQLITE_CONSTRAINT_FOREIGNKEY') kind = 'foreign-key';
  else if (/^SQLITE_(BUSY|LOCKED|CANTOPEN|IOERR|FULL|READONLY)/.test(c)) kind = 'unavailable';
  return toLifeboatError(kind, sql, err, { sqliteCode: c });
}
