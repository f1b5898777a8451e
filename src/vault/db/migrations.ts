import { LifeboatError } from '../../core/errors.js';
import type { Database, Dialect } from './database.js';

/**
 * Versioned schema migrations (docs/vault-db.md). Each migration has a
 * permanent id; `schema_migrations` records which ones a database has. They are
 * applied in id order, all in one transaction at open, so a database is either
 * at the old version or the new one, never between. A database that records an
 * id this code does not know was migrated by a newer Lifeboat: it is refused
 * (DB_SCHEMA_TOO_NEW) and left untouched.
 *
 * Never edit a migration once released; add a new one. SQL is shared between
 * dialects where it can be (SQLite gives BIGINT the 64-bit INTEGER affinity) and
 * given per dialect where it cannot.
 */
export interface Migration {
  readonly id: number;
  readonly name: string;
  readonly sql: string | { readonly [D in Dialect]: string };
}

const blob = (d: Dialect) => (d === 'postgres' ? 'BYTEA' : 'BLOB');

/**
 * Enumerations (roles, states, kinds) are not CHECK-constrained: adding a value is
 * then a code change, not a table rebuild on SQLite. Booleans are 0/1 INTEGERs.
 * Times are ISO-8601 UTC TEXT, which sorts chronologically.
 */
const initial = (d: Dialect) => `
CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

CREATE TABLE users (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL,
  created_at TEXT NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

CREATE TABLE api_tokens (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  secret_hash TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL,
  expires_at TEXT,
  last_used_at TEXT,
  revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
  UNIQUE (user_id, name)
);

CREATE TABLE vaults (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  location TEXT NOT NULL,
  store_url TEXT NOT NULL,
  recovery_network TEXT,
  created_at TEXT NOT NULL
);

CREATE TABLE registration_keys (
  id TEXT PRIMARY KEY,
  vault_id TEXT NOT NULL REFERENCES vaults (id) ON DELETE CASCADE,
  secret_hash TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
);
CREATE INDEX registration_keys_vault ON registration_keys (vault_id);

CREATE TABLE config_servers (
  id TEXT PRIMARY KEY,
  vault_id TEXT NOT NULL REFERENCES vaults (id),
  name TEXT NOT NULL,
  address TEXT NOT NULL,
  version TEXT NOT NULL,
  registered_at TEXT NOT NULL,
  last_heartbeat_at TEXT,
  health TEXT NOT NULL,
  last_refresh_at TEXT,
  credential_hash TEXT UNIQUE,
  UNIQUE (vault_id, name)
);

CREATE TABLE process_servers (
  id TEXT PRIMARY KEY,
  config_server_id TEXT NOT NULL REFERENCES config_servers (id),
  name TEXT NOT NULL,
  address TEXT NOT NULL,
  version TEXT NOT NULL,
  last_heartbeat_at TEXT,
  health TEXT NOT NULL,
  spool_used_bytes BIGINT NOT NULL DEFAULT 0,
  spool_limit_bytes BIGINT NOT NULL DEFAULT 0,
  throughput_bytes_per_sec BIGINT NOT NULL DEFAULT 0,
  credential_hash TEXT UNIQUE,
  UNIQUE (config_server_id, name)
);

CREATE TABLE machines (
  id TEXT PRIMARY KEY,
  config_server_id TEXT NOT NULL REFERENCES config_servers (id),
  name TEXT NOT NULL,
  private_ip TEXT NOT NULL,
  os TEXT NOT NULL,
  kernel TEXT,
  discovered INTEGER NOT NULL DEFAULT 0 CHECK (discovered IN (0, 1)),
  supported INTEGER CHECK (supported IN (0, 1)),
  support_reason TEXT,
  created_at TEXT NOT NULL,
  UNIQUE (config_server_id, name)
);

CREATE TABLE push_accounts (
  id TEXT PRIMARY KEY,
  config_server_id TEXT NOT NULL REFERENCES config_servers (id),
  name TEXT NOT NULL,
  username TEXT NOT NULL,
  kind TEXT NOT NULL,
  encrypted_secret ${blob(d)} NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (config_server_id, name)
);

CREATE TABLE policies (
  id TEXT PRIMARY KEY,
  vault_id TEXT NOT NULL REFERENCES vaults (id),
  name TEXT NOT NULL,
  rpo_threshold_seconds BIGINT NOT NULL,
  retention_hours BIGINT NOT NULL,
  app_consistent_frequency_minutes BIGINT NOT NULL,
  crash_consistent_frequency_seconds BIGINT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (vault_id, name)
);

CREATE TABLE items (
  id TEXT PRIMARY KEY,
  vault_id TEXT NOT NULL REFERENCES vaults (id),
  machine_id TEXT NOT NULL UNIQUE REFERENCES machines (id),
  policy_id TEXT NOT NULL REFERENCES policies (id),
  process_server_id TEXT REFERENCES process_servers (id) ON DELETE SET NULL,
  state TEXT NOT NULL,
  initial_replication_percent BIGINT NOT NULL DEFAULT 0,
  rpo_seconds BIGINT,
  compute TEXT NOT NULL,
  disks TEXT NOT NULL,
  generation BIGINT NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX items_vault_state ON items (vault_id, state);
CREATE INDEX items_policy ON items (policy_id);
CREATE INDEX items_process_server ON items (process_server_id);

CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  item_id TEXT REFERENCES items (id) ON DELETE SET NULL,
  state TEXT NOT NULL,
  created_at TEXT NOT NULL,
  started_at TEXT,
  ended_at TEXT,
  error TEXT,
  initiator TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_item ON jobs (item_id, id);

CREATE TABLE job_steps (
  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  progress_percent BIGINT NOT NULL DEFAULT 0,
  started_at TEXT,
  ended_at TEXT,
  error TEXT,
  PRIMARY KEY (job_id, position)
);

CREATE TABLE alerts (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  severity TEXT NOT NULL,
  subject_id TEXT NOT NULL,
  message TEXT NOT NULL,
  raised_at TEXT NOT NULL,
  cleared_at TEXT
);
-- At most one open alert per kind and subject: raising again is idempotent.
CREATE UNIQUE INDEX alerts_open_subject ON alerts (kind, subject_id) WHERE cleared_at IS NULL;
CREATE INDEX alerts_open ON alerts (raised_at) WHERE cleared_at IS NULL;

CREATE TABLE audit_log (
  id TEXT PRIMARY KEY,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  outcome TEXT NOT NULL,
  request_id TEXT
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
`;

/**
 * Replication (docs/replication.md): one-time enrollment tokens (hash only), the agent
 * of each protected item (credential hash and current certificate serial), and the
 * operator's pause and throttle per item.
 */
const replication = `
CREATE TABLE enrollment_tokens (
  id TEXT PRIMARY KEY,
  item_id TEXT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
  secret_hash TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  used_at TEXT
);
CREATE INDEX enrollment_tokens_item ON enrollment_tokens (item_id);

CREATE TABLE agents (
  id TEXT PRIMARY KEY,
  item_id TEXT NOT NULL UNIQUE REFERENCES items (id) ON DELETE CASCADE,
  machine_id TEXT NOT NULL UNIQUE,
  hostname TEXT NOT NULL,
  version TEXT,
  certificate_serial TEXT NOT NULL,
  certificate_not_after TEXT NOT NULL,
  enrolled_at TEXT NOT NULL,
  last_heartbeat_at TEXT,
  disks TEXT NOT NULL,
  credential_hash TEXT NOT NULL UNIQUE
);

CREATE TABLE replication_controls (
  id TEXT PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
  paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
  throttle_bytes_per_sec BIGINT NOT NULL DEFAULT 0
);
`;

/**
 * Recovery (docs/recovery.md): machines the compute drivers made for items, drill
 * reports (kept after cleanup), drill settings of items and plans (probes, boot
 * marker, schedule), and recovery plans (groups as JSON).
 */
const recovery = `
CREATE TABLE recovered_machines (
  id TEXT PRIMARY KEY,
  item_id TEXT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
  purpose TEXT NOT NULL CHECK (purpose IN ('test', 'failover')),
  driver TEXT NOT NULL,
  point TEXT NOT NULL,
  network TEXT NOT NULL,
  state TEXT NOT NULL,
  job_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX recovered_machines_item ON recovered_machines (item_id, id);

CREATE TABLE drill_reports (
  id TEXT PRIMARY KEY,
  item_id TEXT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
  plan_id TEXT,
  operation TEXT NOT NULL,
  trigger TEXT NOT NULL,
  job_id TEXT NOT NULL,
  cleanup_job_id TEXT,
  outcome TEXT NOT NULL,
  point TEXT,
  rpo_seconds BIGINT,
  rto_seconds BIGINT,
  driver TEXT NOT NULL,
  network TEXT NOT NULL,
  machine_id TEXT,
  accel TEXT,
  probes TEXT NOT NULL,
  console_log TEXT NOT NULL,
  error TEXT,
  notes TEXT,
  started_at TEXT NOT NULL,
  ended_at TEXT
);
CREATE INDEX drill_reports_item ON drill_reports (item_id, id);
CREATE INDEX drill_reports_job ON drill_reports (job_id);

CREATE TABLE drill_settings (
  id TEXT PRIMARY KEY,
  subject_kind TEXT NOT NULL CHECK (subject_kind IN ('item', 'plan')),
  probes TEXT NOT NULL,
  boot_marker TEXT,
  boot_timeout_seconds BIGINT NOT NULL,
  schedule_every_hours BIGINT,
  next_run_at TEXT,
  last_run_at TEXT,
  updated_at TEXT NOT NULL
);
CREATE INDEX drill_settings_next ON drill_settings (next_run_at);

CREATE TABLE recovery_plans (
  id TEXT PRIMARY KEY,
  vault_id TEXT NOT NULL REFERENCES vaults (id),
  name TEXT NOT NULL,
  description TEXT NOT NULL,
  groups TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  UNIQUE (vault_id, name)
);
`;

/**
 * The portal (docs/api.md, "Sign-in and sessions"): a user's password, as a
 * self-describing scrypt hash (src/vault/services/passwords.ts), null for users who
 * sign in with API tokens only; and the RPO of each item sampled over time
 * (src/vault/services/rpo-history.ts, kept 7 days).
 */
const portal = `
ALTER TABLE users ADD COLUMN password_hash TEXT;

CREATE TABLE rpo_samples (
  item_id TEXT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
  at TEXT NOT NULL,
  rpo_seconds BIGINT NOT NULL
);
CREATE INDEX rpo_samples_item_at ON rpo_samples (item_id, at);
CREATE INDEX rpo_samples_at ON rpo_samples (at);
`;

export const MIGRATIONS: readonly Migration[] = [
  { id: 1, name: 'initial control-plane schema', sql: { sqlite: initial('sqlite'), postgres: initial('postgres') } },
  { id: 2, name: 'replication: enrollment tokens, agents, pause and throttle', sql: replication },
  { id: 3, name: 'recovery: recovered machines, drill reports and settings, recovery plans', sql: recovery },
  { id: 4, name: 'portal: user passwords, RPO samples', sql: portal },
];

/** The schema version this code writes and understands. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.id ?? 0;

/** A constant key for PostgreSQL's advisory lock: two processes opening one database migrate one after the other. */
const MIGRATION_LOCK_KEY = 0x4c6966656274;

export interface MigrationResult {
  /** Version before and after. */
  readonly from: number;
  readonly to: number;
  /** Ids applied by this call (empty when the database was up to date). */
  readonly applied: readonly number[];
}

/** Brings `db` to the newest schema (idempotent); refuses a database newer than the code. */
export async function migrate(
  db: Database,
  migrations: readonly Migration[] = MIGRATIONS,
  now: () => Date = () => new Date(),
): Promise<MigrationResult> {
  checkOrder(migrations);
  const known = migrations[migrations.length - 1]?.id ?? 0;
  return db.transaction(async (tx) => {
    if (tx.dialect === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(?)', [MIGRATION_LOCK_KEY]);
    await tx.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
    );
    const rows = await tx.query<{ id: number }>('SELECT id FROM schema_migrations ORDER BY id');
    const have = new Set(rows.map((r) => Number(r.id)));
    const current = rows.length === 0 ? 0 : Math.max(...have);
    if (current > known) {
      throw new LifeboatError(
        'DB_SCHEMA_TOO_NEW',
        `the vault database ${db.url} has schema version ${current}, newer than the ${known} this Lifeboat knows`,
        { details: { databaseVersion: current, knownVersion: known } },
      );
    }
    const applied: number[] = [];
    for (const m of migrations) {
      if (have.has(m.id)) continue;
      await tx.exec(typeof m.sql === 'string' ? m.sql : m.sql[tx.dialect]);
      await tx.run('INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)', [m.id, m.name, now().toISOString()]);
      applied.push(m.id);
    }
    return { from: current, to: Math.max(current, known), applied };
    // Read committed: after waiting for the advisory lock, the next statements
    // must see the migrations that the previous holder committed.
  }, { isolation: 'read-committed' });
}

function checkOrder(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (!Number.isSafeInteger(m.id) || m.id <= 0 || (i > 0 && m.id <= (migrations[i - 1]?.id ?? 0))) {
      throw new LifeboatError('INTERNAL', `migration ids must be positive and increasing (at ${m.id})`);
    }
  });
}
