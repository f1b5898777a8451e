/**
 * The server's only way to report: an injected callback with a constant message
 * and structured fields (adapt pino with `(level, msg, f) => log[level](f, msg)`).
 * It must not throw.
 */
export type NbdLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type NbdLogger = (level: NbdLogLevel, msg: string, fields: Record<string, unknown>) => void;

export const silentLogger: NbdLogger = () => {};

/** Fields describing a thrown value, for log lines. */
export function errorFields(err: unknown): Record<string, unknown> {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { err: err.message, ...(code === undefined ? {} : { errCode: code }) };
  }
  return { err: String(err) };
}
