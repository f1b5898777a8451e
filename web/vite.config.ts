import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

/**
 * The portal: a React single-page app served by the vault at `/` (src/vault/http/portal.ts).
 * Built into dist/web; it talks only to the public REST API under /api/v1.
 * `npm run dev:web` serves it with hot reload and sends /api to a vault on 127.0.0.1:8720.
 */
export default defineConfig({
  root,
  base: '/',
  build: { outDir: fileURLToPath(new URL('../dist/web', import.meta.url)), emptyOutDir: true, sourcemap: true },
  server: { proxy: { '/api': 'http://127.0.0.1:8720' } },
});
