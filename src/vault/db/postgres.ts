import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import {
  SERIALIZATION_FAILURE,
  bindParams,
  redactUrl,
  toLifeboatError,
  type Database,
  type NativeErrorKind,
  type Row,
  type RunResult,
  type SqlParam,
  type TransactionOptions,
} from './database.js';

const POOL_SIZE = 10;
const CONNECT_TIMEOUT_MS = 10_000;
/** A serializable transaction that keeps losing races gives up after this many runs (CONFLICT). */
const MAX_TRANSACTION_ATTEMPTS = 40;

const INT8_OID = 20;
const NUMERIC_OID = 1700;

/** BIGINT (and SUM/COUNT results) come back as JS numbers; a value beyond 2^53 is a bug, not a rounding. */
function parseInteger(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) && Number.isInteger(n)) {
    throw new LifeboatError('INTERNAL', `database integer ${text} does not fit in a JavaScript number`);
  }
  return n;
}

const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) => {
    if ((oid === INT8_OID || oid === NUMERIC_OID) && format !== 'binary') return parseInteger;
    return pg.types.getTypeParser(oid, format as 'text');
  }) as typeof pg.types.getTypeParser,
};

interface TxState {
  readonly client: pg.PoolClient;
  active: boolean;
}

/**
 * The PostgreSQL driver: a pg Pool. Statements outside a transaction go to any
 * pooled connection; a transaction pins one connection for its whole run
 * (found again through async context, so nested calls join it) and runs at
 * SERIALIZABLE isolation (unless asked for READ COMMITTED), re-running fn on
 * serialization failures.
 */
export class PostgresDatabase implements Database {
  readonly dialect = 'postgres' as const;
  private readonly context = new AsyncLocalStorage<TxState>();
  private readonly translated = new Map<string, string>();
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    readonly url: string,
  ) {}

  /** Connects to `url` (postgres://user:password@host:port/database) and checks that it answers. */
  static async open(url: string): Promise<PostgresDatabase> {
    const pool = new pg.Pool({
      connectionString: url,
      max: POOL_SIZE,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      types: TYPES,
    });
    // An idle pooled connection that dies (server restart) must not crash the
    // process; the next statement on it fails loudly instead.
    pool.on('error', () => undefined);
    const db = new PostgresDatabase(pool, redactUrl(url));
    try {
      await db.query('SELECT 1');
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
    return db;
  }

  async query<T = Row>(sql: string, params: readonly SqlParam[] = []): Promise<T[]> {
    const result = await this.execute(sql, params);
    return result.rows as T[];
  }

  async one<T = Row>(sql: string, params: readonly SqlParam[] = []): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0];
  }

  async run(sql: string, params: readonly SqlParam[] = []): Promise<RunResult> {
    const result = await this.execute(sql, params);
    return { changes: result.rowCount ?? 0 };
  }

  async exec(script: string): Promise<void> {
    // No parameters: the simple query protocol runs every statement of the script.
    await this.send(script, script, undefined);
  }

  async transaction<T>(fn: (tx: Database) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const current = this.context.getStore();
    if (current) {
      checkActive(current);
      return fn(this);
    }
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.attempt(fn, options.isolation === 'read-committed' ? 'READ COMMITTED' : 'SERIALIZABLE');
      } catch (err) {
        if (!isLifeboatError(err, 'CONFLICT') || err.details[SERIALIZATION_FAILURE] !== true || attempt >= MAX_TRANSACTION_ATTEMPTS) {
          throw err;
        }
        // Randomised, growing back-off so that racing transactions spread out.
        const delayMs = Math.random() * Math.min(100, 2 ** attempt);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  private async attempt<T>(fn: (tx: Database) => Promise<T>, isolation: string): Promise<T> {
    this.checkOpen();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw translate(err, 'CONNECT');
    }
    const state: TxState = { client, active: true };
    let broken: Error | undefined;
    // A connection lost while checked out is reported here and by the pending
    // query; without a listener it would crash the process.
    const onError = (err: Error) => (broken = err);
    client.on('error', onError);
    try {
      await this.sendOn(client, `BEGIN ISOLATION LEVEL ${isolation}`, []);
      const result = await this.context.run(state, () => fn(this));
      state.active = false;
      await this.sendOn(client, 'COMMIT', []);
      return result;
    } catch (err) {
      state.active = false;
      try {
        await client.query('ROLLBACK');
      } catch (rollbackErr) {
        // The connection is in an unknown state: drop it rather than pool it.
        broken = rollbackErr as Error;
      }
      throw err;
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  private async execute(sql: string, params: readonly SqlParam[]): Promise<pg.QueryResult> {
    return this.send(sql, this.placeholders(sql), bindParams(params));
  }

  private async send(sql: string, text: string, values: unknown[] | undefined): Promise<pg.QueryResult> {
    const current = this.context.getStore();
    if (current) {
      checkActive(current);
      return this.sendOn(current.client, text, values, sql);
    }
    this.checkOpen();
    try {
      return await this.pool.query(text, values);
    } catch (err) {
      throw translate(err, sql);
    }
  }

  private async sendOn(client: pg.PoolClient, text: string, values: unknown[] | undefined, sql = text): Promise<pg.QueryResult> {
    try {
      return await client.query(text, values);
    } catch (err) {
      throw translate(err, sql);
    }
  }

  /** `?` -> `$n`, leaving quoted strings and identifiers alone. */
  private placeholders(sql: string): string {
    let out = this.translated.get(sql);
    if (out !== undefined) return out;
    out = '';
    let n = 0;
    let quote: string | undefined;
    for (const ch of sql) {
      if (quote) {
        if (ch === quote) quote = undefined;
        out += ch;
      } else if (ch === "'" || ch === '"') {
        quote = ch;
        out += ch;
      } else if (ch === '?') out += `$${++n}`;
      else out += ch;
    }
    this.translated.set(sql, out);
    return out;
  }

  private checkOpen(): void {
    if (this.closed) throw new LifeboatError('INTERNAL', `database ${this.url} is closed`);
  }
}

function checkActive(state: TxState): void {
  if (!state.active) throw new LifeboatError('INTERNAL', 'statement issued from a transaction that has already ended');
}

const UNAVAILABLE_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE']);

function translate(err: unknown, sql: string): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const e = err as { code?: unknown; constraint?: unknown; table?: unknown; detail?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const details: Record<string, unknown> = { sqlState: code };
  if (typeof e.constraint === 'string') details.constraint = e.constraint;
  if (typeof e.table === 'string') details.table = e.table;
  let kind: NativeErrorKind = 'other';
  if (code === '23505') kind = 'unique';
  else if (code === '23503') kind = 'foreign-key';
  else if (code === '40001' || code === '40P01') kind = 'serialization';
  else if (
    code.startsWith('08') ||
    ['57P01', '57P02', '57P03', '53300', '3D000', '28P01', '28000'].includes(code) ||
    UNAVAILABLE_NODE_CODES.has(code) ||
    /timeout|terminated|Connection terminated/i.test(err instanceof Error ? err.message : '')
  ) {
    kind = 'unavailable';
  }
  const message = err instanceof Error ? err.message : String(err);
  const withDetail = typeof e.detail === 'string' && err instanceof Error ? Object.assign(new Error(`${message} (${e.detail})`), { cause: err }) : err;
  return toLifeboatError(kind, sql, withDetail, details);
}
