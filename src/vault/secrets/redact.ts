/**
 * The one place where secrets are removed from what Lifeboat prints: log objects,
 * error messages, API error bodies, the stderr of remote commands. Loggers call
 * `redact` on every object they write; code that builds an error message from text
 * it does not control (a remote stderr, a driver's message) calls it on that text.
 *
 * Three nets, so that a secret has to slip through all of them to leak:
 * 1. by key: any property whose name says it holds a secret is replaced whole;
 * 2. by value: every secret registered with `registerSecret` (the credentials the
 *    process has opened) and every one passed in `extraSecrets` is cut out of any
 *    string, wherever it appears;
 * 3. by shape: text that looks like a credential (`password=…`, `Bearer …`,
 *    `user:pass@` in a URL, `AccountKey=…`, a PEM private key) is masked.
 */

export const REDACTED = '[REDACTED]';

/** Property names (lower case, without `_`, `-` or `.`) whose values are always secret. */
const SECRET_KEYS = new Set([
  'password', 'passwd', 'pass', 'pwd', 'secret', 'token', 'privatekey', 'passphrase', 'authorization',
  'proxyauthorization', 'cookie', 'setcookie', 'connectionstring', 'accountkey', 'apikey', 'sas', 'sastoken',
  'credentials', 'credential', 'registrationkey', 'recoverykey', 'vaultkey', 'masterkey', 'sessionid',
]);

/** Name endings that also mark a secret: `clientSecret`, `accessToken`, `dbPassword`, `sshPrivateKey`. */
const SECRET_SUFFIXES = ['password', 'passwd', 'secret', 'token', 'privatekey', 'passphrase', 'connectionstring', 'accountkey', 'apikey'];

/** Registered values shorter than this are ignored: masking "a" everywhere would destroy every message. */
const MIN_SECRET_LENGTH = 4;
const MAX_DEPTH = 20;

const TEXT_PATTERNS: readonly [RegExp, string][] = [
  [/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g, REDACTED],
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${REDACTED}`],
  [/\b(password|passwd|pwd|secret|token|passphrase|api[_-]?key|access[_-]?key|account[_-]?key|sig|client[_-]?secret)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s;&,"']+)/gi, `$1$2${REDACTED}`],
  [/(\b[a-z][a-z0-9+.-]*:\/\/[^\s/:@]*:)[^\s/@]+@/gi, `$1${REDACTED}@`],
  // Lifeboat's own credentials have a shape: API tokens, server and agent credentials, enrollment tokens, registration keys.
  [/\b(lbt|lbs|lba|lbe)_[A-Za-z0-9_-]{16,}/g, REDACTED],
  [/\blbrk1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/g, REDACTED],
];

const registered = new Set<string>();

/**
 * Marks a value as secret for the rest of the process: from now on `redact` cuts it
 * out of every string. Called wherever a credential is opened or received.
 */
export function registerSecret(secret: string | undefined): void {
  if (secret !== undefined && secret.length >= MIN_SECRET_LENGTH) registered.add(secret);
}

/** Forgets a registered secret (tests, or a credential that was deleted). */
export function unregisterSecret(secret: string): void {
  registered.delete(secret);
}

export function isSecretKey(name: string): boolean {
  const lower = name.toLowerCase().replace(/[_\-.\s]/g, '');
  // Plurals too: `tokens: [...]`, `passwords`.
  return [lower, lower.replace(/s$/, '')].some((key) => SECRET_KEYS.has(key) || SECRET_SUFFIXES.some((suffix) => key.endsWith(suffix)));
}

/**
 * Returns a copy of `value` with secrets removed. Strings come back as strings;
 * Errors come back as plain objects (`name`, `message`, `stack`, `code`, `details`,
 * `cause`, own fields) so that a logger can serialise them; cycles become `[Circular]`.
 * Never throws and never mutates its input.
 */
export function redact(value: string, extraSecrets?: readonly (string | undefined)[]): string;
export function redact(value: unknown, extraSecrets?: readonly (string | undefined)[]): unknown;
export function redact(value: unknown, extraSecrets: readonly (string | undefined)[] = []): unknown {
  const secrets = [...registered];
  for (const s of extraSecrets) if (s !== undefined && s.length >= MIN_SECRET_LENGTH) secrets.push(s);
  // Longest first, so that a secret containing another is cut out whole.
  secrets.sort((a, b) => b.length - a.length);
  return walk(value, secrets, new WeakSet(), 0);
}

function walk(value: unknown, secrets: readonly string[], seen: WeakSet<object>, depth: number): unknown {
  if (typeof value === 'string') return redactText(value, secrets);
  if (value === null || typeof value !== 'object') {
    return typeof value === 'function' || typeof value === 'symbol' ? String(value) : value;
  }
  if (seen.has(value)) return '[Circular]';
  if (depth >= MAX_DEPTH) return '[Too deep]';
  seen.add(value);
  try {
    if (Buffer.isBuffer(value) || ArrayBuffer.isView(value)) return `[${value.byteLength} bytes]`;
    if (value instanceof Date) return value;
    if (Array.isArray(value)) return value.map((item) => walk(item, secrets, seen, depth + 1));
    if (value instanceof Map) {
      return Object.fromEntries([...value].map(([k, v]) => [String(k), field(String(k), v, secrets, seen, depth)]));
    }
    if (value instanceof Set) return [...value].map((item) => walk(item, secrets, seen, depth + 1));
    const out: Record<string, unknown> = {};
    if (value instanceof Error) {
      out['name'] = value.name;
      out['message'] = redactText(value.message, secrets);
      if (value.stack !== undefined) out['stack'] = redactText(value.stack, secrets);
      if (value.cause !== undefined) out['cause'] = walk(value.cause, secrets, seen, depth + 1);
    }
    for (const [k, v] of Object.entries(value)) out[k] = field(k, v, secrets, seen, depth);
    return out;
  } finally {
    seen.delete(value);
  }
}

function field(key: string, value: unknown, secrets: readonly string[], seen: WeakSet<object>, depth: number): unknown {
  if (isSecretKey(key) && value !== undefined && value !== null && value !== '') return REDACTED;
  return walk(value, secrets, seen, depth + 1);
}

function redactText(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  for (const [pattern, replacement] of TEXT_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}
