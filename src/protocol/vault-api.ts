import { ERROR_CODES, LifeboatError, type ErrorCode } from '../core/errors.js';

/** The vault URL as the base of API paths; USAGE unless it is an http(s) URL without credentials. */
export function vaultBaseUrl(vaultUrl: string): string {
  let url: URL;
  try {
    url = new URL(vaultUrl);
  } catch (err) {
    throw new LifeboatError('USAGE', `the vault URL ${JSON.stringify(vaultUrl)} is not a URL`, { cause: err });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new LifeboatError('USAGE', 'the vault URL must be http:// or https://');
  if (url.username || url.password) throw new LifeboatError('USAGE', 'the vault URL must not carry credentials');
  return url.href.replace(/\/+$/, '');
}

/**
 * One JSON call to the vault's REST API, for the applications that talk to it from
 * other machines (the agent, a standalone process server). The answer must be JSON;
 * a problem+json error becomes a LifeboatError with the vault's code (API_ERROR when
 * the code is unknown here), retryable on 5xx; no answer at all is SERVER_UNREACHABLE.
 * The bearer never appears in an error.
 */
export async function vaultJson(options: {
  readonly base: string;
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: unknown;
  readonly bearer?: string;
  readonly timeoutMs: number;
  readonly fetchImpl?: typeof fetch;
}): Promise<unknown> {
  const { base, method, path, body, bearer, timeoutMs } = options;
  let res: Response;
  try {
    res = await (options.fetchImpl ?? fetch)(base + path, {
      method,
      headers: {
        accept: 'application/json',
        ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new LifeboatError('SERVER_UNREACHABLE', `the vault at ${base} did not answer ${method} ${path}: ${(err as Error).message}`, {
      cause: err,
      details: { server: base },
    });
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.ok) {
    // 204: the route answers nothing (the agent's reverse digests and acknowledgements).
    if (res.status === 204) return undefined;
    if (json === undefined || json === null || typeof json !== 'object') {
      throw new LifeboatError('API_ERROR', `the vault answered ${method} ${path} with no JSON object`, { details: { status: res.status } });
    }
    return json;
  }
  const problem = (json ?? {}) as { code?: string; detail?: string; title?: string; requestId?: string };
  const known = typeof problem.code === 'string' && problem.code in ERROR_CODES;
  const code: ErrorCode = known ? (problem.code as ErrorCode) : res.status >= 500 ? 'SERVER_UNREACHABLE' : 'API_ERROR';
  throw new LifeboatError(code, `${method} ${path}: ${problem.detail ?? problem.title ?? `HTTP ${res.status}`}`, {
    details: { status: res.status, code: problem.code ?? null, requestId: problem.requestId ?? null },
    ...(res.status >= 500 ? { retryable: true } : {}),
  });
}
