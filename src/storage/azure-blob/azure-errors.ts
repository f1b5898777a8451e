import { LifeboatError } from '../../core/errors.js';

interface ServiceErrorShape {
  statusCode?: number;
  code?: string;
}

function shape(err: unknown): ServiceErrorShape {
  if (typeof err !== 'object' || err === null) return {};
  const out: ServiceErrorShape = {};
  if ('statusCode' in err && typeof err.statusCode === 'number') out.statusCode = err.statusCode;
  if ('code' in err && typeof err.code === 'string') out.code = err.code;
  return out;
}

/** The HTTP status of an Azure SDK error, undefined when no response arrived. */
export function azureStatus(err: unknown): number | undefined {
  return shape(err).statusCode;
}

/**
 * Maps an Azure SDK error to the contract's codes. `createOnly` tells whether the
 * request carried If-None-Match '*', the only case where 409/412 mean "exists".
 */
export function mapAzureError(err: unknown, op: string, key: string, createOnly = false): LifeboatError {
  if (err instanceof LifeboatError) return err;
  const { statusCode: status, code: serviceCode } = shape(err);
  const details = { op, key, status, serviceCode };
  if (status === undefined) {
    return new LifeboatError('STORAGE_UNAVAILABLE', 'azure blob service did not answer', { cause: err, details });
  }
  if (status === 404) return new LifeboatError('NOT_FOUND', `object ${key} not found`, { cause: err, details });
  if ((status === 409 || status === 412) && createOnly) {
    return new LifeboatError('STORAGE_PRECONDITION', `object ${key} already exists`, { cause: err, details });
  }
  if (status === 401 || status === 403) {
    return new LifeboatError('STORAGE_AUTH', 'azure blob service refused the credentials', { cause: err, details });
  }
  const transient = status === 408 || status === 429 || status >= 500;
  return new LifeboatError('STORAGE_UNAVAILABLE', 'azure blob service answered with an error', {
    cause: err,
    details,
    retryable: transient,
  });
}
