import { LifeboatError, isLifeboatError } from '../../../core/errors.js';
import type { Database, Row, SqlParam } from '../database.js';

/**
 * The one place where model objects (camelCase) meet table rows (snake_case).
 * A table is described once by the kind of each model field; column names are
 * the snake_case of the field names. Repositories build on this and add the
 * queries that are particular to their resource.
 */
export type ColumnKind = 'text' | 'int' | 'bool' | 'json';

export type Columns<T> = { readonly [K in keyof T]-?: ColumnKind };

export interface TableSpec<T> {
  readonly table: string;
  /** What a row is called in messages ("vault", "replication policy"). */
  readonly noun: string;
  readonly columns: Columns<T>;
}

export function snake(field: string): string {
  return field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function toParam(kind: ColumnKind, value: unknown): SqlParam {
  if (value === null) return null;
  if (value === undefined) throw new LifeboatError('INTERNAL', 'undefined column value');
  switch (kind) {
    case 'json':
      return JSON.stringify(value);
    case 'bool':
      return value ? 1 : 0;
    case 'int':
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
        throw new LifeboatError('INTERNAL', `integer column given ${String(value)}`);
      }
      return value;
    case 'text':
      return value as string;
  }
}

function fromColumn(kind: ColumnKind, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (kind) {
    case 'json':
      return JSON.parse(value as string);
    case 'bool':
      return Number(value) !== 0;
    case 'int':
      return Number(value);
    case 'text':
      return value;
  }
}

/** Generic create/get/list/update/delete for a table whose key is a text `id`. */
export class Table<T extends { readonly id: string }> {
  private readonly fields: readonly (keyof T & string)[];
  readonly selectList: string;

  constructor(
    private readonly db: Database,
    readonly spec: TableSpec<T>,
  ) {
    this.fields = Object.keys(spec.columns) as (keyof T & string)[];
    this.selectList = this.fields.map(snake).join(', ');
  }

  /** Maps a row (selected with selectList) back to the model type. */
  fromRow(row: Row): T {
    const out: Record<string, unknown> = {};
    for (const f of this.fields) out[f] = fromColumn(this.spec.columns[f], row[snake(f)]);
    return out as T;
  }

  /** Inserts `value` plus `extra` columns that the model does not show (secrets, hashes). */
  async insert(value: T, extra: Record<string, SqlParam> = {}): Promise<T> {
    const cols = [...this.fields.map(snake), ...Object.keys(extra)];
    const params = [...this.fields.map((f) => toParam(this.spec.columns[f], value[f])), ...Object.values(extra)];
    await this.guard(
      this.db.run(`INSERT INTO ${this.spec.table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`, params),
    );
    return value;
  }

  async find(id: string): Promise<T | undefined> {
    const row = await this.db.one(`SELECT ${this.selectList} FROM ${this.spec.table} WHERE id = ?`, [id]);
    return row ? this.fromRow(row) : undefined;
  }

  /** The row with `id`; NOT_FOUND when there is none. */
  async get(id: string): Promise<T> {
    const found = await this.find(id);
    if (!found) throw this.notFound(id);
    return found;
  }

  /** Rows whose fields equal every field of `where`, oldest id first. */
  async list(where: Partial<T> = {}, options: { limit?: number; extraWhere?: string; extraParams?: SqlParam[] } = {}): Promise<T[]> {
    const { clause, params } = this.where(where);
    const conditions = [clause, options.extraWhere].filter((c) => c).join(' AND ');
    const limit = options.limit === undefined ? '' : ` LIMIT ${Math.max(0, Math.floor(options.limit))}`;
    const rows = await this.db.query(
      `SELECT ${this.selectList} FROM ${this.spec.table}${conditions ? ` WHERE ${conditions}` : ''} ORDER BY id${limit}`,
      [...params, ...(options.extraParams ?? [])],
    );
    return rows.map((r) => this.fromRow(r));
  }

  /** Sets the fields of `patch`; NOT_FOUND when `id` does not exist. Returns the updated row. */
  async update(id: string, patch: Partial<Omit<T, 'id'>>, extraWhere?: { sql: string; params: SqlParam[] }): Promise<T> {
    const changed = await this.updateWhere(id, patch, extraWhere);
    if (!changed) throw this.notFound(id);
    return this.get(id);
  }

  /** Like update() but reports whether a row matched instead of throwing. */
  async updateWhere(id: string, patch: Partial<Omit<T, 'id'>>, extraWhere?: { sql: string; params: SqlParam[] }): Promise<boolean> {
    const entries = Object.entries(patch).filter(([f, v]) => f !== 'id' && v !== undefined && f in this.spec.columns);
    if (entries.length === 0 && !extraWhere) return (await this.find(id)) !== undefined;
    const sets = entries.map(([f]) => `${snake(f)} = ?`);
    const params = entries.map(([f, v]) => toParam(this.spec.columns[f as keyof T], v));
    const assignments = sets.length > 0 ? sets.join(', ') : 'id = id';
    const result = await this.guard(
      this.db.run(`UPDATE ${this.spec.table} SET ${assignments} WHERE id = ?${extraWhere ? ` AND ${extraWhere.sql}` : ''}`, [
        ...params,
        id,
        ...(extraWhere?.params ?? []),
      ]),
    );
    return result.changes > 0;
  }

  /** Deletes `id`; NOT_FOUND when it does not exist, CONFLICT while other rows reference it. */
  async delete(id: string): Promise<void> {
    const result = await this.guard(this.db.run(`DELETE FROM ${this.spec.table} WHERE id = ?`, [id]));
    if (result.changes === 0) throw this.notFound(id);
  }

  notFound(id: string): LifeboatError {
    return new LifeboatError('NOT_FOUND', `${this.spec.noun} ${id} does not exist`, { details: { [this.spec.noun]: id } });
  }

  /** Rewords driver constraint errors with this table's noun. */
  async guard<R>(work: Promise<R>): Promise<R> {
    try {
      return await work;
    } catch (err) {
      if (isLifeboatError(err, 'CONFLICT') && err.retryable === false) {
        throw new LifeboatError('CONFLICT', `${this.spec.noun}: ${err.message}`, { cause: err, details: err.details, retryable: false });
      }
      if (isLifeboatError(err, 'NOT_FOUND')) {
        throw new LifeboatError('NOT_FOUND', `${this.spec.noun}: ${err.message}`, { cause: err, details: err.details });
      }
      throw err;
    }
  }

  private where(where: Partial<T>): { clause: string; params: SqlParam[] } {
    const parts: string[] = [];
    const params: SqlParam[] = [];
    for (const [f, v] of Object.entries(where)) {
      if (v === undefined) continue;
      const kind = this.spec.columns[f as keyof T];
      if (kind === undefined) throw new LifeboatError('INTERNAL', `${this.spec.table} has no field ${f}`);
      if (v === null) parts.push(`${snake(f)} IS NULL`);
      else {
        parts.push(`${snake(f)} = ?`);
        params.push(toParam(kind, v));
      }
    }
    return { clause: parts.join(' AND '), params };
  }
}
