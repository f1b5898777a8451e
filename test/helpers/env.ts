import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');

/**
 * Returns the absolute path of a tool the test needs. A missing tool fails the
 * test with the package to install: tests never skip silently (.ci/run installs
 * every package named here).
 */
export function requireTool(name: string, debianPackage: string): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`${name} is not installed: apt-get install ${debianPackage} (.ci/run installs it)`);
  }
}

/** A fresh directory under the repository's .test-tmp, removed by the returned cleanup. */
export function makeTempDir(prefix: string): { path: string; cleanup: () => void } {
  const base = join(ROOT, '.test-tmp');
  mkdirSync(base, { recursive: true });
  const path = mkdtempSync(join(base, `${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export const repoRoot = ROOT;

/** A TCP port on 127.0.0.1 that was free a moment ago (tests bind loopback only). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
