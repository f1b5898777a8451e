/**
 * The portal's only way to the vault: the public REST API under /api/v1 (docs/api.md),
 * with the session's bearer token. Errors come back as problem+json; ApiError keeps the
 * stable code and turns the body into a sentence a person can read.
 */

export interface FieldError {
  readonly in?: string;
  readonly field: string;
  readonly message: string;
}

interface Problem {
  readonly code?: string;
  readonly title?: string;
  readonly detail?: string;
  readonly requestId?: string;
  readonly errors?: readonly FieldError[];
  readonly details?: { readonly allowed?: readonly string[] };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields: readonly FieldError[] = [],
    readonly requestId: string | null = null,
  ) {
    super(message);
  }
}

/** Sentences for the codes a person can cause from the portal; anything else shows the server's detail. */
const HINTS: Record<string, string> = {
  UNAUTHENTICATED: 'Your session has ended or the sign-in details are wrong. Sign in again.',
  FORBIDDEN: 'Your role does not allow this.',
  NOT_FOUND: 'It no longer exists: it may have been removed in the meantime.',
  CONFLICT: 'It conflicts with the current state.',
  ILLEGAL_TRANSITION: 'This action is not possible in the current state.',
  TOO_MANY_ATTEMPTS: 'Too many failed sign-ins. Wait a few minutes and try again.',
};

/** What to show a person for an error: the hint for its code, the server's detail, and the fields at fault. */
export function readableError(err: unknown): string {
  if (err instanceof ApiError) {
    const hint = HINTS[err.code];
    const fields = err.fields.map((f) => `${fieldLabel(f.field)}: ${f.message}`).join('; ');
    const parts = [hint, err.message, fields].filter((p): p is string => Boolean(p));
    return [...new Set(parts)].join(' — ');
  }
  if (err instanceof TypeError) return 'The vault cannot be reached. Check that it is running and try again.';
  return err instanceof Error ? err.message : String(err);
}

/** "/retentionHours" → "retention hours". */
function fieldLabel(pointer: string): string {
  const last = pointer.split('/').filter(Boolean).pop() ?? pointer;
  return last.replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
}

const TOKEN_KEY = 'lifeboat.session';
const KIND_KEY = 'lifeboat.session.kind';

/** How the token was obtained: a sign-in session (revoked on sign-out) or an API token pasted in (only forgotten). */
export type TokenKind = 'session' | 'token';

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storedTokenKind(): TokenKind {
  return sessionStorage.getItem(KIND_KEY) === 'session' ? 'session' : 'token';
}

/** Kept for this browser tab only (sessionStorage): closing the tab forgets it. */
export function storeToken(token: string | null, kind: TokenKind = 'token'): void {
  if (token === null) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(KIND_KEY);
  } else {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(KIND_KEY, kind);
  }
}

/** Called when the vault answers 401 to a signed-in request: the session is over. */
let onUnauthenticated: () => void = () => undefined;
export function setUnauthenticatedHandler(handler: () => void): void {
  onUnauthenticated = handler;
}

async function toError(res: Response): Promise<ApiError> {
  let problem: Problem = {};
  try {
    problem = (await res.json()) as Problem;
  } catch {
    // not JSON: keep the status line
  }
  let message = problem.detail ?? problem.title ?? `${res.status} ${res.statusText}`;
  if (problem.details?.allowed) message += ` (possible now: ${problem.details.allowed.join(', ') || 'nothing'})`;
  return new ApiError(res.status, problem.code ?? `HTTP_${res.status}`, message, problem.errors ?? [], problem.requestId ?? null);
}

export async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const token = storedToken();
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }), ...(signal ? { signal } : {}) });
  if (!res.ok) {
    const err = await toError(res);
    if (res.status === 401 && token) onUnauthenticated();
    throw err;
  }
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export const api = {
  get: <T>(path: string, signal?: AbortSignal) => request<T>('GET', path, undefined, signal),
  post: <T>(path: string, body: unknown = {}) => request<T>('POST', path, body),
  put: <T>(path: string, body: unknown) => request<T>('PUT', path, body),
  patch: <T>(path: string, body: unknown) => request<T>('PATCH', path, body),
  del: (path: string) => request<void>('DELETE', path),
};

/**
 * Server-sent events with the bearer token (EventSource cannot send headers): calls
 * `onData` with each event's parsed `data:` until the stream ends or `signal` aborts.
 */
export async function streamEvents<T>(path: string, onData: (data: T) => void, signal: AbortSignal): Promise<void> {
  const token = storedToken();
  const res = await fetch(path, { headers: { accept: 'text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) }, signal });
  if (!res.ok || !res.body) throw await toError(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      if (data) onData(JSON.parse(data) as T);
    }
  }
}
