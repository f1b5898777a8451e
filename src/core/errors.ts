/**
 * One error type for the whole program. Every failure a user can meet carries a
 * stable `code` from the registry below; the CLI maps codes to exit codes in one
 * place (src/cli/exit-codes.ts) and docs/errors.md documents every code (a test
 * keeps the two in step).
 */

export interface ErrorSpec {
  /** Process exit code the CLI uses for this error. */
  readonly exitCode: number;
  /** Whether repeating the same operation may succeed (network blips, throttling). */
  readonly retryable: boolean;
  /** One line for docs/errors.md. */
  readonly summary: string;
  /** A hint the CLI prints as "Try: ..." when it helps. */
  readonly hint?: string;
}

export const ERROR_CODES = {
  USAGE: { exitCode: 2, retryable: false, summary: 'The command line or a request is malformed.' },
  CONFIG_INVALID: { exitCode: 2, retryable: false, summary: 'A configuration value is missing or out of range.' },
  NOT_FOUND: { exitCode: 3, retryable: false, summary: 'The named object, point, disk or file does not exist.' },
  STORE_NOT_INITIALIZED: {
    exitCode: 3,
    retryable: false,
    summary: 'The store URL names a place with no Lifeboat store in it.',
    hint: 'lifeboat store init --store URL',
  },
  STORE_EXISTS: { exitCode: 4, retryable: false, summary: 'A store already exists at that URL.' },
  STORE_UNSUPPORTED_VERSION: {
    exitCode: 4,
    retryable: false,
    summary: 'The store was written by a newer format version than this program reads.',
  },
  UNSUPPORTED_SCHEME: { exitCode: 2, retryable: false, summary: 'No storage driver is registered for the URL scheme.' },
  WRONG_PASSPHRASE: {
    exitCode: 5,
    retryable: false,
    summary: 'No key slot opens with the given passphrase or recovery key.',
    hint: 'check LIFEBOAT_PASSPHRASE or --passphrase-file; a recovery key opens the store too',
  },
  PASSPHRASE_REQUIRED: {
    exitCode: 5,
    retryable: false,
    summary: 'The store is encrypted and no passphrase was given.',
    hint: 'set LIFEBOAT_PASSPHRASE or pass --passphrase-file FILE',
  },
  CORRUPT_OBJECT: {
    exitCode: 6,
    retryable: false,
    summary: 'A stored object failed its authentication or structure check (flipped bytes, truncation).',
    hint: 'lifeboat store verify --full',
  },
  MISSING_OBJECT: {
    exitCode: 6,
    retryable: false,
    summary: 'An object that a recovery point references is absent from the store.',
    hint: 'lifeboat store verify',
  },
  JOURNAL_GAP: {
    exitCode: 7,
    retryable: false,
    summary: 'Journal segments of a disk are not contiguous; the missing sequence numbers are named.',
  },
  GENERATION_FENCED: {
    exitCode: 7,
    retryable: false,
    summary: 'A journal segment belongs to a source generation that is no longer current.',
  },
  DISK_LOCKED: {
    exitCode: 8,
    retryable: true,
    summary: 'Another writer holds the disk; two writers on one disk are refused.',
    hint: 'wait for the other writer, or pass --break-lock once you know it is gone',
  },
  CONFLICT: { exitCode: 8, retryable: true, summary: 'A concurrent change won a race; repeat the operation.' },
  SOURCE_UNREADABLE: { exitCode: 9, retryable: false, summary: 'The source disk or image cannot be read (vanished, permission, short read).' },
  TARGET_UNWRITABLE: { exitCode: 9, retryable: false, summary: 'The restore or export target cannot be written.' },
  SIZE_MISMATCH: { exitCode: 9, retryable: false, summary: 'A disk or target has a different size than the operation needs.' },
  STORAGE_UNAVAILABLE: {
    exitCode: 10,
    retryable: true,
    summary: 'The storage service did not answer or answered with a transient error.',
  },
  STORAGE_AUTH: { exitCode: 10, retryable: false, summary: 'The storage service refused the credentials.' },
  STORAGE_PRECONDITION: {
    exitCode: 8,
    retryable: false,
    summary: 'A conditional write found the object already present.',
  },
  DB_UNAVAILABLE: {
    exitCode: 10,
    retryable: true,
    summary: 'The vault database did not answer, refused the connection or is locked by another process.',
  },
  DB_SCHEMA_TOO_NEW: {
    exitCode: 4,
    retryable: false,
    summary: 'The vault database was migrated by a newer Lifeboat than this one; this version refuses to touch it.',
    hint: 'upgrade Lifeboat to the version that last opened this database',
  },
  NBD_PROTOCOL: { exitCode: 11, retryable: false, summary: 'An NBD client broke the protocol.' },
  SECRET_UNREADABLE: {
    exitCode: 5,
    retryable: false,
    summary: 'A stored credential cannot be opened: the vault key differs, or the sealed text was damaged or moved.',
    hint: 'check that the vault key file is the one the credential was stored with, or enter the credential again',
  },
  HOST_UNREACHABLE: {
    exitCode: 12,
    retryable: true,
    summary: 'The machine did not accept an SSH connection (refused, unreachable, or no answer in time).',
    hint: 'check the address and port, that sshd runs on the machine, and that no firewall is in the way',
  },
  SSH_AUTH_FAILED: {
    exitCode: 12,
    retryable: false,
    summary: 'The machine refused the push-install account (wrong user, password or key, or that method is disabled).',
    hint: 'check the account (lifeboat account add) and that sshd allows root login with that method',
  },
  HOST_KEY_MISMATCH: {
    exitCode: 12,
    retryable: false,
    summary: 'The machine presented an SSH host key other than the pinned one; nothing was sent to it.',
    hint: 'compare the fingerprint with ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the machine before re-pinning',
  },
  PUSH_INSTALL_FAILED: {
    exitCode: 12,
    retryable: false,
    summary: 'A step of push install failed on the machine; the step, exit status and the end of its stderr are named.',
  },
  VALIDATION: {
    exitCode: 2,
    retryable: false,
    summary: 'A request or resource failed validation; details list every bad field with the accepted range.',
  },
  ILLEGAL_TRANSITION: {
    exitCode: 8,
    retryable: false,
    summary: 'The operation is not allowed in the current state of the replicated item or job; the state is named.',
    hint: 'lifeboat item show ITEM (or job show JOB) to see the state and what it allows',
  },
  REGISTRATION_KEY_INVALID: {
    exitCode: 12,
    retryable: false,
    summary: 'The registration key is malformed, forged, tampered with or for another purpose.',
    hint: 'download a new key with lifeboat registration-key create',
  },
  REGISTRATION_KEY_EXPIRED: {
    exitCode: 12,
    retryable: false,
    summary: 'The registration key is older than its 5 days of validity; the expiry is named.',
    hint: 'lifeboat registration-key create',
  },
  CLOCK_SKEW: {
    exitCode: 12,
    retryable: false,
    summary: "The caller's clock differs from the vault's by more than allowed (5 minutes); both times are named.",
    hint: 'synchronise the clock with NTP (timedatectl set-ntp true) and retry',
  },
  UNAUTHENTICATED: {
    exitCode: 13,
    retryable: false,
    summary: 'No valid credentials were presented (missing, unknown, expired or revoked token).',
    hint: 'lifeboat login',
  },
  TOO_MANY_ATTEMPTS: {
    exitCode: 13,
    retryable: true,
    summary: 'Too many failed sign-ins for this user name (5 in 15 minutes); further attempts are refused until the time named.',
    hint: 'wait until the time named, or ask a user manager to set a new password: lifeboat user set-password NAME',
  },
  FORBIDDEN: {
    exitCode: 13,
    retryable: false,
    summary: 'The caller is authenticated but its role lacks the permission; the role and permission are named.',
  },
  SERVER_UNREACHABLE: {
    exitCode: 14,
    retryable: true,
    summary: 'The CLI could not reach the vault server (refused, unresolvable or no answer in time); the server URL is named.',
    hint: 'check that lifeboat server runs there, or log in to another with lifeboat login --server URL --token TOKEN',
  },
  API_ERROR: {
    exitCode: 14,
    retryable: false,
    summary: 'The vault server answered with an error this CLI does not know; its code, HTTP status and request id are in the details.',
  },
  JOB_FAILED: {
    exitCode: 15,
    retryable: false,
    summary: "A job the CLI followed ended failed or cancelled; the job's error and the failing step are named.",
    hint: 'lifeboat job show JOB',
  },
  PROTOCOL_INVALID: {
    exitCode: 16,
    retryable: false,
    summary: 'A replication protocol message was malformed, truncated, too large, of an unknown type or failed its checksum; nothing of it was stored.',
  },
  SEQUENCE_REPLAYED: {
    exitCode: 16,
    retryable: false,
    summary: 'A replication segment repeats a sequence number the process server already holds; it was refused and nothing was stored.',
  },
  SEQUENCE_OUT_OF_ORDER: {
    exitCode: 16,
    retryable: false,
    summary: 'A replication segment skips sequence numbers; it was refused and nothing was stored.',
  },
  AGENT_UNAUTHORIZED: {
    exitCode: 12,
    retryable: false,
    summary: 'The agent presented no certificate, one not issued by this vault, a replaced one, or one for a machine that is not protected.',
    hint: 'enroll the agent again: lifeboat agent enroll',
  },
  ENROLLMENT_INVALID: {
    exitCode: 12,
    retryable: false,
    summary: 'The agent enrollment token is unknown, used already, expired or for another replicated item.',
    hint: 'lifeboat item enroll-token ITEM',
  },
  SPOOL_FULL: {
    exitCode: 9,
    retryable: true,
    summary: "The process server's spool reached its size limit; the agent keeps its changes and sends them again later.",
  },
  FREEZE_FAILED: {
    exitCode: 9,
    retryable: true,
    summary: 'An app-consistent point could not be taken: a pre/post script failed or timed out, or a filesystem would not freeze; filesystems were thawed.',
  },
  TRACKER_FAILED: {
    exitCode: 9,
    retryable: true,
    summary: 'A change tracker could not read the disk or talk to QEMU; the disk is compared again in full when tracking resumes.',
  },
  COMPUTE_UNAVAILABLE: {
    exitCode: 17,
    retryable: false,
    summary: 'The compute driver cannot run here: a tool is missing (the message names the Debian package) or the host refuses it.',
  },
  COMPUTE_FAILED: {
    exitCode: 17,
    retryable: false,
    summary: 'A recovered machine could not be created, started or stopped, or it stopped before it booted; the console tail is in the message.',
  },
  UNSUPPORTED: { exitCode: 2, retryable: false, summary: 'The driver or object cannot do what was asked (booting an export, a command in a guest without a console shell).' },
  TIMEOUT: { exitCode: 18, retryable: true, summary: 'Something awaited did not happen in time: a boot marker, a probe, a guest command, an acknowledgement.' },
  DRILL_FAILED: {
    exitCode: 19,
    retryable: false,
    summary: 'A drill ran but the recovered machine did not boot or a check failed; the drill report says which.',
    hint: 'lifeboat drill report ITEM',
  },
  INTERNAL: { exitCode: 70, retryable: false, summary: 'A bug: an invariant of the program did not hold.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorOptions {
  cause?: unknown;
  /** Structured context printed with --json and in logs (never secrets). */
  details?: Record<string, unknown>;
  /** Overrides the registry's retryable flag for this instance. */
  retryable?: boolean;
}

export class LifeboatError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LifeboatError';
    this.code = code;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
    this.details = options.details ?? {};
  }

  get hint(): string | undefined {
    const spec: ErrorSpec = ERROR_CODES[this.code];
    return spec.hint;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}

export function isLifeboatError(err: unknown, code?: ErrorCode): err is LifeboatError {
  return err instanceof LifeboatError && (code === undefined || err.code === code);
}

/** Wraps any thrown value into a LifeboatError, keeping the original as `cause`. */
export function asLifeboatError(err: unknown, fallback: ErrorCode = 'INTERNAL'): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new LifeboatError(fallback, message, { cause: err });
}
