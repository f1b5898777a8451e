import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_CODES, type ErrorSpec, type LifeboatError } from '../../core/errors.js';
import { REQUEST_ID_HEADER } from './request-id.js';

/** One failing field of a request (VALIDATION errors). */
export interface FieldError {
  /** Which part of the request: body, querystring, params. */
  readonly in: string;
  /** JSON pointer of the field, e.g. "/retentionHours". */
  readonly field: string;
  readonly message: string;
}

/** RFC 7807 body of every error response (content type application/problem+json). */
export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly instance: string;
  readonly requestId: string;
  readonly errors?: readonly FieldError[];
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/**
 * HTTP status of each code. Protocol-level refusals (405 wrong method, 413 body too
 * large, 415 content type) carry USAGE with their own HTTP status. Codes not listed answer 503 when retryable, else 500.
 * Codes are looked up by name (state machine, registration, replication) so
 * this table compiles whether or not they exist yet.
 */
const STATUS_OF_CODE: Readonly<Record<string, number>> = {
  USAGE: 400,
  VALIDATION: 400,
  CONFIG_INVALID: 400,
  UNSUPPORTED_SCHEME: 400,
  CLOCK_SKEW: 400,
  UNAUTHENTICATED: 401,
  REGISTRATION_KEY_EXPIRED: 401,
  REGISTRATION_KEY_INVALID: 401,
  ENROLLMENT_INVALID: 401,
  TOO_MANY_ATTEMPTS: 429,
  AGENT_UNAUTHORIZED: 403,
  WRONG_PASSPHRASE: 400,
  PASSPHRASE_REQUIRED: 400,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  ILLEGAL_TRANSITION: 409,
  STORE_EXISTS: 409,
  GENERATION_FENCED: 409,
  DISK_LOCKED: 409,
  INTERNAL: 500,
};

export function statusOfError(err: LifeboatError): number {
  return STATUS_OF_CODE[err.code] ?? (err.retryable ? 503 : 500);
}

function titleOf(code: string): string {
  const spec = (ERROR_CODES as Record<string, ErrorSpec | undefined>)[code];
  return spec?.summary ?? code;
}

const MAX_INSTANCE_CHARS = 512;
const MAX_DETAIL_CHARS = 500;

/** Sends one problem+json response; every error path ends here. */
export function sendProblem(
  request: FastifyRequest,
  reply: FastifyReply,
  p: { status: number; code: string; detail: string; errors?: readonly FieldError[] },
): FastifyReply {
  const path = (request.raw.url ?? request.url ?? '/').split('?')[0] ?? '/';
  const body: Problem = {
    type: `urn:lifeboat:error:${p.code}`,
    title: titleOf(p.code),
    status: p.status,
    code: p.code,
    detail: p.detail.length > MAX_DETAIL_CHARS ? `${p.detail.slice(0, MAX_DETAIL_CHARS)}…` : p.detail,
    instance: path.length > MAX_INSTANCE_CHARS ? `${path.slice(0, MAX_INSTANCE_CHARS)}…` : path,
    requestId: request.id,
    ...(p.errors && p.errors.length > 0 ? { errors: p.errors } : {}),
  };
  return reply.code(p.status).header(REQUEST_ID_HEADER, request.id).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(body));
}

/** ajv's error list -> the fields that failed. */
export function fieldErrors(err: FastifyError): FieldError[] {
  const where = err.validationContext ?? 'request';
  return (err.validation ?? []).map((v) => {
    const params = v.params as Record<string, unknown>;
    let field = v.instancePath || '';
    if (typeof params.missingProperty === 'string') field = `${field}/${params.missingProperty}`;
    if (typeof params.additionalProperty === 'string') field = `${field}/${params.additionalProperty}`;
    const message = params.additionalProperty !== undefined ? 'unknown field' : (v.message ?? 'invalid');
    return { in: where, field: field || '/', message };
  });
}

/** Fastify's own 4xx errors (bad JSON, content type, body size, bad URL) -> code and status. */
export function frameworkProblem(err: FastifyError): { status: number; code: string; detail: string } | undefined {
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { status: 413, code: 'USAGE', detail: 'The request body exceeds the size limit.' };
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return { status: 415, code: 'USAGE', detail: 'Unsupported content type: send application/json.' };
  // JSON.parse messages quote the body; never echo it.
  if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY')
    return { status: 400, code: 'USAGE', detail: 'The body is not valid JSON.' };
  const status = err.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return { status, code: status === 404 ? 'NOT_FOUND' : 'USAGE', detail: err.message || 'The request is malformed.' };
  }
  return undefined;
}
