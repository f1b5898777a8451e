import { LifeboatError } from '../../core/errors.js';

/**
 * The vault's database contract, implemented by the SQLite driver (embedded
 * default) and the PostgreSQL driver. Everything above it (migrations,
 * repositories) is written once against this interface.
 *
 * SQL is a portable subset: `?` placeholders (drivers translate them to `$1..`
 * for PostgreSQL), TEXT, BIGINT (64-bit; read back as a JS number, which must be
 * a safe integer), booleans stored as INTEGER 0/1 (boolean parameters are bound
 * as 1/0 by both drivers), JSON stored as TEXT, BLOB/BYTEA for opaque bytes
 * (read back as Buffer), `RETURNING`, partial indexes, `ON CONFLICT`.
 *
 * Contract (checked by test/vault/db/suite.ts against both drivers):
 * - A single statement is atomic.
 * - transaction(fn) runs fn in one transaction: committed when fn resolves,
 *   rolled back when it throws (the error is rethrown). It is serializable:
 *   SQLite takes the write lock at BEGIN (one writer at a time); PostgreSQL
 *   runs SERIALIZABLE and re-runs fn (up to a bound) when the server reports a
 *   serialization failure, so fn must have no effects outside the database.
 *   Calls made while fn runs (through `tx` or through this object, in fn's
 *   async context) use the same transaction; a nested transaction() joins the
 *   outer one rather than opening a savepoint.
 * - Errors are LifeboatErrors: a unique or primary-key violation is CONFLICT
 *   (not retryable); a foreign-key violation is NOT_FOUND for an insert or
 *   update (the referenced row is missing) and CONFLICT for a delete (the row
 *   is still referenced); an unreachable or locked database is DB_UNAVAILABLE
 *   (retryable); anything else (syntax, check constraints) is INTERNAL.
 * - close() waits for running work and releases connections; the instance is
 *   unusable afterwards.
 */
export type Dialect = 'sqlite' | 'postgres';

export type SqlParam = string | number | bigint | boolean | null | Buffer;

export type Row = Record<string, unknown>;

export interface RunResult {
  /** Rows inserted, updated or deleted by the statement. */
  readonly changes: number;
}

export interface TransactionOptions {
  /**
   * 'read-committed' gives each statement a fresh snapshot instead of one for the
   * whole transaction (PostgreSQL only; SQLite is always serializable). Only for
   * callers that serialize themselves with a lock, such as migrations, which must
   * see what the previous lock holder committed.
   */
  readonly isolation?: 'serializable' | 'read-committed';
}

export interface Database {
  readonly dialect: Dialect;
  /** The URL it was opened with, password removed. */
  readonly url: string;
  query<T = Row>(sql: string, params?: readonly SqlParam[]): Promise<T[]>;
  /** The first row, or undefined when there is none. */
  one<T = Row>(sql: string, params?: readonly SqlParam[]): Promise<T | undefined>;
  run(sql: string, params?: readonly SqlParam[]): Promise<RunResult>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(script: string): Promise<void>;
  transaction<T>(fn: (tx: Database) => Promise<T>, options?: TransactionOptions): Promise<T>;
  close(): Promise<void>;
}

/** Converts parameters into what both drivers bind the same way. */
export function bindParams(params: readonly SqlParam[]): (string | number | bigint | null | Buffer)[] {
  return params.map((p, i) => {
    if (p === undefined) throw new LifeboatError('INTERNAL', `SQL parameter ${i + 1} is undefined`);
    if (typeof p === 'boolean') return p ? 1 : 0;
    return p;
  });
}

/** What a driver learned from its native error, in driver-neutral terms. */
export type NativeErrorKind = 'unique' | 'foreign-key' | 'serialization' | 'unavailable' | 'other';

/** Marker in `details` of a CONFLICT that transaction() may retry by itself. */
export const SERIALIZATION_FAILURE = 'serializationFailure';

/** The one mapping from a classified native error to a LifeboatError (both drivers use it). */
export function toLifeboatError(kind: NativeErrorKind, sql: string, err: unknown, details: Record<string, unknown> = {}): LifeboatError {
  const message = err instanceof Error ? err.message : String(err);
  switch (kind) {
    case 'unique':
      return new LifeboatError('CONFLICT', `already exists: ${message}`, { cause: err, details, retryable: false });
    case 'foreign-key':
      return /^\s*delete\b/i.test(sql)
        ? new LifeboatError('CONFLICT', `still in use: ${message}`, { cause: err, details, retryable: false })
        : new LifeboatError('NOT_FOUND', `a referenced object does not exist: ${message}`, { cause: err, details });
    case 'serialization':
      return new LifeboatError('CONFLICT', `concurrent transaction: ${message}`, {
        cause: err,
        details: { ...details, [SERIALIZATION_FAILURE]: true },
      });
    case 'unavailable':
      return new LifeboatError('DB_UNAVAILABLE', `vault database unavailable: ${message}`, { cause: err, details });
    case 'other':
      return new LifeboatError('INTERNAL', `database error: ${message}`, { cause: err, details: { ...details, sql } });
  }
}

/** Removes the password from a database URL before it is shown or logged. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

/** A FIFO async lock. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((resolve) => (release = resolve));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    return release;
  }
}
