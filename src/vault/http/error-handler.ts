import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LifeboatError } from '../../core/errors.js';
import { declaredRoutes } from './route.js';
import { fieldErrors, frameworkProblem, sendProblem, statusOfError, type FieldError } from './problem.js';

/**
 * The one place errors become responses: LifeboatErrors by their code, Fastify's
 * own 4xx (validation, bad JSON, content type, size) by theirs, anything else as a
 * 500 INTERNAL whose body says nothing of the cause (the log has it, by request id).
 */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, request, reply) => handleError(err, request, reply));

  app.setNotFoundHandler((request, reply) => {
    const path = (request.raw.url ?? '/').split('?')[0] ?? '/';
    const matching = declaredRoutes(app).filter((r) => r.pattern.test(path));
    if (matching.length > 0 && !matching.some((r) => r.method === request.method)) {
      const allow = [...new Set(matching.map((r) => r.method))].join(', ');
      reply.header('allow', allow);
      return sendProblem(request, reply, { status: 405, code: 'USAGE', detail: `${request.method} is not allowed here; allowed: ${allow}` });
    }
    return sendProblem(request, reply, { status: 404, code: 'NOT_FOUND', detail: 'no such resource' });
  });
}

export function handleError(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (err instanceof LifeboatError) {
    const status = statusOfError(err);
    if (status >= 500) logError(request, err);
    if (status === 401) reply.header('www-authenticate', 'Bearer');
    // TOO_MANY_ATTEMPTS names when to retry; clients that read headers get it as Retry-After too.
    if (status === 429 && typeof err.details.retryAfterSeconds === 'number') reply.header('retry-after', String(err.details.retryAfterSeconds));
    const detail = err.code === 'INTERNAL' ? internalDetail(request) : err.message;
    const errors = Array.isArray(err.details.errors) ? err.details.errors.map(toFieldError) : undefined;
    return sendProblem(request, reply, { status, code: err.code, detail, ...(errors ? { errors } : {}) });
  }
  const fe = err as FastifyError;
  if (fe && typeof fe === 'object' && Array.isArray(fe.validation)) {
    return sendProblem(request, reply, { status: 400, code: 'VALIDATION', detail: 'the request does not match its schema', errors: fieldErrors(fe) });
  }
  const framework = fe && typeof fe === 'object' ? frameworkProblem(fe) : undefined;
  if (framework) return sendProblem(request, reply, framework);
  logError(request, err);
  return sendProblem(request, reply, { status: 500, code: 'INTERNAL', detail: internalDetail(request) });
}

/** Domain errors list fields as {field, message, value}; the API shows {in, field (a JSON pointer), message}, never the value. */
function toFieldError(e: unknown): FieldError {
  const o = (e ?? {}) as Record<string, unknown>;
  const field = typeof o.field === 'string' ? o.field : '';
  return {
    in: typeof o.in === 'string' ? o.in : 'body',
    field: field.startsWith('/') ? field : `/${field}`,
    message: typeof o.message === 'string' ? o.message : 'invalid',
  };
}

function internalDetail(request: FastifyRequest): string {
  return `internal error; the server log has the cause under request id ${request.id}`;
}

/** The logger redacts (src/vault/logging/logger.ts): the error goes to it whole, cause and stack included. */
function logError(request: FastifyRequest, err: unknown): void {
  request.log.error({ err }, 'request failed');
}
