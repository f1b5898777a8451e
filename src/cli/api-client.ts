/**
 * The CLI's client of the vault REST API (docs/api.md): base URL, bearer token,
 * JSON in and out. A problem+json answer becomes a LifeboatError with the
 * server's code (codes this CLI does not know become API_ERROR), so the exit
 * status follows the error registry; the request id is in the details. A server
 * that cannot be reached is SERVER_UNREACHABLE, naming the server.
 *
 * The token goes only into the Authorization header: never into a message,
 * detail or URL.
 */
import { ERROR_CODES, LifeboatError, type ErrorCode } from '../core/errors.js';
import type { Env } from './context.js';
import { resolveTarget, type ApiFlags, type ApiTarget } from './profile.js';

export type Query = Record<string, string | number | undefined>;

/** A page of a list route. */
export interface Page<T> {
  readonly items: T[];
  readonly nextCursor: string | null;
}

/** One server-sent event. */
export interface SseEvent {
  readonly event: string;
  readonly data: string;
  readonly id?: string;
}

const REQUEST_TIMEOUT_MS = 30_000;

export class ApiClient {
  constructor(
    readonly target: ApiTarget,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  get<T>(path: string, query?: Query): Promise<T> {
    return this.request<T>('GET', path, undefined, query);
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {});
  }

  /** Every item of a paginated list route, following nextCursor. */
  async all<T>(path: string): Promise<T[]> {
    const out: T[] = [];
    let after: string | undefined;
    for (;;) {
      // The first page without a query: some list routes take no ?limit.
      const page = await this.get<Page<T>>(path, after === undefined ? undefined : { after });
      out.push(...page.items);
      if (!page.nextCursor) return out;
      after = page.nextCursor;
    }
  }

  async request<T>(method: string, path: string, body?: unknown, query?: Query): Promise<T> {
    const res = await this.send(method, path, body, query, 'application/json', AbortSignal.timeout(REQUEST_TIMEOUT_MS));
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new LifeboatError('API_ERROR', `${this.target.server} answered ${method} ${path} with something other than JSON`, {
        details: { status: res.status, requestId: res.headers.get('x-request-id') },
      });
    }
  }

  /** Follows a text/event-stream route until the server closes it or `signal` aborts. */
  async *events(path: string, signal?: AbortSignal): AsyncGenerator<SseEvent> {
    const res = await this.send('GET', path, undefined, undefined, 'text/event-stream', signal);
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    let frame: { event: string; data: string[]; id?: string } = { event: 'message', data: [] };
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (frame.data.length > 0) yield { event: frame.event, data: frame.data.join('\n'), ...(frame.id ? { id: frame.id } : {}) };
            frame = { event: 'message', data: [] };
          } else if (!line.startsWith(':')) {
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'data') frame.data.push(value);
            else if (field === 'event') frame.event = value;
            else if (field === 'id') frame.id = value;
          }
        }
      }
    } catch (err) {
      if (signal?.aborted) return;
      throw new LifeboatError('SERVER_UNREACHABLE', `the event stream from ${this.target.server} broke off`, { cause: err, details: { server: this.target.server } });
    }
  }

  private async send(method: string, path: string, body: unknown, query: Query | undefined, accept: string, signal?: AbortSignal): Promise<Response> {
    const url = new URL(this.target.server + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    let res: Response;
    try {
      res = await this.fetchImpl(url, {
        method,
        headers: {
          ...(this.target.token ? { authorization: `Bearer ${this.target.token}` } : {}),
          accept: `${accept}, application/problem+json`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      throw unreachable(this.target.server, err);
    }
    if (res.ok) return res;
    throw await problemError(res, method, path);
  }
}

function unreachable(server: string, err: unknown): LifeboatError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const timedOut = (err as { name?: string }).name === 'TimeoutError';
  const why = timedOut ? 'no answer in time' : cause?.code === 'ECONNREFUSED' ? 'connection refused' : (cause?.code ?? cause?.message ?? String(err));
  return new LifeboatError('SERVER_UNREACHABLE', `cannot reach the vault server at ${server}: ${why}`, { cause: err, details: { server } });
}

function isKnownCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/** Turns an error answer (problem+json or anything else) into a LifeboatError. */
async function problemError(res: Response, method: string, path: string): Promise<LifeboatError> {
  const requestId = res.headers.get('x-request-id');
  let problem: { code?: unknown; detail?: unknown; title?: unknown; requestId?: unknown; errors?: unknown } = {};
  try {
    problem = (await res.json()) as typeof problem;
  } catch {
    // not JSON: the status alone speaks
  }
  const id = typeof problem.requestId === 'string' ? problem.requestId : requestId;
  const detail = typeof problem.detail === 'string' ? problem.detail : typeof problem.title === 'string' ? problem.title : `HTTP ${res.status}`;
  const fields = Array.isArray(problem.errors)
    ? (problem.errors as { field?: string; message?: string }[]).map((e) => `${e.field ?? ''} ${e.message ?? ''}`.trim())
    : [];
  const message = fields.length > 0 ? `${detail}: ${fields.join('; ')}` : detail;
  const details: Record<string, unknown> = { status: res.status, method, path, requestId: id };
  if (Array.isArray(problem.errors)) details.errors = problem.errors;
  if (isKnownCode(problem.code)) return new LifeboatError(problem.code, message, { details });
  return new LifeboatError('API_ERROR', message, { details: { ...details, code: problem.code ?? null }, retryable: res.status >= 500 && res.status !== 501 });
}

/** A client for the target the flags, environment or saved profile name. */
export function connect(flags: ApiFlags, env: Env, options: { tokenOptional?: boolean } = {}): ApiClient {
  return new ApiClient(resolveTarget(flags, env, options));
}

/**
 * The id of the object that `ref` names, by id or by name, from a list route
 * (`/api/v1/vaults`). Ambiguous names are refused with the candidates' ids.
 */
export async function resolveRef(client: ApiClient, listPath: string, what: string, ref: string): Promise<string> {
  const items = await client.all<{ id: string; name?: string }>(listPath);
  if (items.some((i) => i.id === ref)) return ref;
  const named = items.filter((i) => i.name === ref);
  if (named.length === 1) return (named[0] as { id: string }).id;
  if (named.length > 1)
    throw new LifeboatError('USAGE', `${named.length} of the ${what} list are named ${ref}; give the id: ${named.map((i) => i.id).join(', ')}`);
  throw new LifeboatError('NOT_FOUND', `no ${what} with the id or name ${ref}`);
}
