import { LifeboatError } from '../../core/errors.js';

interface S3ErrorShape {
  status?: number;
  name?: string;
}

function shape(err: unknown): S3ErrorShape {
  if (typeof err !== 'object' || err === null) return {};
  const out: S3ErrorShape = {};
  if ('name' in err && typeof err.name === 'string') out.name = err.name;
  if ('$metadata' in err && typeof err.$metadata === 'object' && err.$metadata !== null) {
    const meta = err.$metadata;
    if ('httpStatusCode' in meta && typeof meta.httpStatusCode === 'number') out.status = meta.httpStatusCode;
  }
  return out;
}

/** The HTTP status of an S3 SDK error, undefined when no response arrived. */
export function s3Status(err: unknown): number | undefined {
  return shape(err).status;
}

const AUTH_NAMES = new Set(['CredentialsProviderError', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken']);

/**
 * Maps an S3 SDK error to the contract's codes. `createOnly` tells whether the
 * request carried If-None-Match: *, the only case where 409/412 mean "exists".
 */
export function mapS3Error(err: unknown, op: string, key: string, createOnly = false): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const { status, name } = shape(err);
  const details = { op, key, status, serviceCode: name };
  if (name !== undefined && AUTH_NAMES.has(name)) {
    return new LifeboatError('STORAGE_AUTH', 's3 service refused the credentials', { cause: err, details });
  }
  if (status === undefined) {
    return new LifeboatError('STORAGE_UNAVAILABLE', 's3 service did not answer', { cause: err, details });
  }
  if (status === 404) return new LifeboatError('NOT_FOUND', `object ${key} not found`, { cause: err, details });
  if ((status === 409 || status === 412) && createOnly) {
    return new LifeboatError('STORAGE_PRECONDITION', `object ${key} already exists`, { cause: err, details });
  }
  if (status === 401 || status === 403) {
    return new LifeboatError('STORAGE_AUTH', 's3 service refused the credentials', { cause: err, details });
  }
  // 409 ConditionalRequestConflict without create-only, throttling (503 SlowDown) and 5xx clear by themselves.
  const transient = status === 408 || status === 409 || status === 429 || status >= 500;
  return new LifeboatError('STORAGE_UNAVAILABLE', 's3 service answered with an error', { cause: err, details, retryable: transient });
}
