import pino, { type DestinationStream, type Level, type Logger } from 'pino';
import { LifeboatError } from '../../core/errors.js';
import { redact } from '../secrets/redact.js';

/** The vault's logger type: pino, so Fastify takes it as is. */
export type VaultLogger = Logger;

export const LOG_LEVELS: readonly (Level | 'silent')[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
export const DEFAULT_LOG_LEVEL = 'info';

export interface VaultLoggerOptions {
  /** Default: $LIFEBOAT_LOG_LEVEL, else "info". */
  readonly level?: string;
  /** Where JSON lines go; default stderr. Tests pass a capture stream. */
  readonly destination?: DestinationStream;
  /** Read for LIFEBOAT_LOG_LEVEL; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/**
 * The one way to make the vault's logger: JSON lines (pino) to stderr, level from
 * LIFEBOAT_LOG_LEVEL. Redaction happens here and nowhere else: every argument of
 * every log call (the field object, the constant message, interpolation values),
 * every child binding and every serialised error goes through `redact()`
 * (src/vault/secrets/redact.ts) before pino writes it, so a secret has to get past
 * property-name, registered-value and shape redaction to reach a line.
 *
 * Callers log constant messages with fields (`log.info({ jobId }, 'job started')`);
 * request logs carry method, route id, status, duration, request id and principal,
 * never headers, URLs with their query or bodies (src/vault/http/server.ts).
 */
export function createVaultLogger(options: VaultLoggerOptions = {}): VaultLogger {
  const env = options.env ?? process.env;
  const level = (options.level ?? env.LIFEBOAT_LOG_LEVEL ?? DEFAULT_LOG_LEVEL).trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new LifeboatError('CONFIG_INVALID', `LIFEBOAT_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`, { details: { level } });
  }
  const logger = pino(
    {
      level,
      base: { service: 'lifeboat-vault' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        level: (label) => ({ level: label }),
        bindings: (bindings) => redact(bindings) as Record<string, unknown>,
      },
      serializers: { err: (err: unknown) => redact(err) },
      hooks: {
        logMethod(args, method) {
          const clean = args.map((arg) => redact(arg)) as Parameters<typeof method>;
          method.apply(this, clean);
        },
      },
    },
    options.destination ?? pino.destination({ fd: 2, sync: false }),
  );
  // pino does not run formatters.bindings for children; children inherit this override (Object.create), so every level is covered.
  const child = logger.child;
  const redactingChild = function (this: VaultLogger, bindings: Record<string, unknown>, childOptions?: Parameters<typeof child>[1]) {
    return child.call(this, redact(bindings) as Record<string, unknown>, childOptions);
  };
  logger.child = redactingChild as typeof child;
  return logger;
}

/** A logger that writes nothing (same type, same redaction): the default where no logging is wanted. */
export function silentLogger(): VaultLogger {
  return createVaultLogger({ level: 'silent', env: {} });
}
