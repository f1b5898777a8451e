import { readFile, readdir } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { LifeboatError } from '../../core/errors.js';
import type { LifeboatRouteConfig } from './types.js';

const PUBLIC: LifeboatRouteConfig = { public: true };

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.map': 'application/json; charset=utf-8',
};

/** Built asset names (Vite: `index-<hash>.js`): nothing that could climb out of the directory. */
const ASSET_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

/**
 * The page may load only what the vault serves itself: no inline script, no other
 * origin, no framing (clickjacking), no form posts elsewhere.
 */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
} as const;

/**
 * The portal (web/, built into dist/web): `GET /` is its page and `GET /assets/NAME`
 * its scripts and styles, public like /healthz — the page holds no data, and every
 * call it makes to /api/v1 carries the signed-in user's token. The files are read once,
 * at start; a vault started from a tree where the portal was not built answers `/` with
 * 404 NOT_FOUND saying so.
 */
export async function installPortal(app: FastifyInstance, dir: string): Promise<void> {
  const files = new Map<string, Buffer>();
  let index: Buffer | undefined;
  try {
    index = await readFile(join(dir, 'index.html'));
    for (const name of await readdir(join(dir, 'assets'))) if (ASSET_NAME.test(name)) files.set(name, await readFile(join(dir, 'assets', name)));
  } catch {
    index = undefined; // not built: `/` says so
  }
  const send = (reply: FastifyReply, body: Buffer, type: string, cache: string): FastifyReply =>
    reply.headers(SECURITY_HEADERS).header('content-type', type).header('cache-control', cache).send(body);

  app.get('/', { config: PUBLIC, schema: { hide: true } }, async (_request, reply) => {
    if (!index) throw new LifeboatError('NOT_FOUND', `the portal is not built (no ${join(dir, 'index.html')}): run npm run build`);
    return send(reply, index, TYPES['.html']!, 'no-cache');
  });
  app.get('/assets/:name', { config: PUBLIC, schema: { hide: true } }, async (request, reply) => {
    const name = (request.params as { name: string }).name;
    const body = files.get(name);
    if (!body) throw new LifeboatError('NOT_FOUND', 'no such portal file');
    // Names carry a content hash: a changed file has a new name.
    return send(reply, body, TYPES[extname(name)] ?? 'application/octet-stream', 'public, max-age=31536000, immutable');
  });
}
