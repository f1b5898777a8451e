import type { JsonSchema } from '../route.js';

/** Shared JSON schemas of the API. Every object refuses unknown fields. */

export const idString: JsonSchema = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[0-9A-Za-z_-]+$' };
export const nameString: JsonSchema = { type: 'string', minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9 ._-]*$' };
export const timestamp: JsonSchema = { type: 'string' };
export const nullableTimestamp: JsonSchema = { type: 'string', nullable: true };

export const idParams: JsonSchema = { type: 'object', additionalProperties: false, required: ['id'], properties: { id: idString } };

/** `?limit=&after=`: at most `limit` items after the id `after`. */
export const pageQuery: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 }, after: idString },
};

/** `?order=newest` on the lists that grow without end (jobs, alerts): newest first, `after` pages towards older. */
export const pageOrder: JsonSchema = { type: 'string', enum: ['oldest', 'newest'] };

export function pageOf(item: JsonSchema): JsonSchema {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['items', 'nextCursor'],
    properties: { items: { type: 'array', items: item }, nextCursor: { type: 'string', nullable: true } },
  };
}

export function object(properties: Record<string, JsonSchema>, required: readonly string[] = Object.keys(properties)): JsonSchema {
  return { type: 'object', additionalProperties: false, required: [...required], properties };
}
