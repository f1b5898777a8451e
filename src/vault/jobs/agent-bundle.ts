import { chmod, cp, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LifeboatError } from '../../core/errors.js';

/**
 * The directory push install copies to a machine. Until the agent exists (a later
 * milestone) it is the installed Lifeboat package's runtime files — package.json,
 * bin/ and dist/, without node_modules — or the contents of a configured bundle
 * directory, plus `agent.env` (mode 0600): where the vault is, which machine this is,
 * and the one-time enrollment token the agent enrolls with (docs/replication.md); the
 * agent is issued its own certificate and credential at enrollment.
 */

/** What `agent.env` says; values are single-quoted for a POSIX shell. */
export interface AgentEnv {
  readonly vaultUrl: string;
  readonly vaultId: string;
  readonly configServerId: string;
  readonly machineId: string;
  readonly machineName: string;
  readonly itemId: string;
  /** One-time, 24 h (AgentService.createEnrollmentToken). */
  readonly enrollmentToken?: string;
}

export function agentEnvText(env: AgentEnv): string {
  const q = (text: string): string => `'${text.replace(/'/g, `'\\''`)}'`;
  return [
    '# Written by the Lifeboat vault at push install (mode 0600): the enrollment token is used once, to enroll the agent.',
    `LIFEBOAT_VAULT_URL=${q(env.vaultUrl)}`,
    `LIFEBOAT_VAULT_ID=${q(env.vaultId)}`,
    `LIFEBOAT_CONFIG_SERVER_ID=${q(env.configServerId)}`,
    `LIFEBOAT_MACHINE_ID=${q(env.machineId)}`,
    `LIFEBOAT_MACHINE_NAME=${q(env.machineName)}`,
    `LIFEBOAT_ITEM_ID=${q(env.itemId)}`,
    ...(env.enrollmentToken === undefined ? [] : [`LIFEBOAT_ENROLLMENT_TOKEN=${q(env.enrollmentToken)}`]),
    '',
  ].join('\n');
}

/** The root of the installed Lifeboat package (the directory holding its package.json), from this module's location. */
export async function packageRoot(): Promise<string> {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    try {
      const pkg = JSON.parse(await readFile(candidate, 'utf8')) as { name?: string };
      if (pkg.name === 'lifeboat') return dir;
    } catch {
      // not here (missing or not JSON): look one level up
    }
    const up = dirname(dir);
    if (up === dir) throw new LifeboatError('CONFIG_INVALID', 'the Lifeboat package root (package.json) cannot be found for the agent bundle');
    dir = up;
  }
}

export async function packageVersion(root: string): Promise<string> {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? '0.0.0';
}

/**
 * Builds the bundle in a new temporary directory; the caller removes it with `cleanup`.
 * CONFIG_INVALID when the package has not been built (no dist/) or the bundle dir is missing.
 */
export async function assembleAgentBundle(options: { bundleDir?: string; env: AgentEnv }): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-agent-bundle-'));
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    await chmod(dir, 0o755);
    if (options.bundleDir !== undefined) {
      await stat(options.bundleDir).catch((err: unknown) => {
        throw new LifeboatError('CONFIG_INVALID', `the agent bundle directory ${options.bundleDir} cannot be read`, { cause: err });
      });
      await cp(options.bundleDir, dir, { recursive: true, verbatimSymlinks: true });
    } else {
      const root = await packageRoot();
      for (const part of ['package.json', 'bin', 'dist']) {
        await stat(join(root, part)).catch((err: unknown) => {
          throw new LifeboatError('CONFIG_INVALID', `the agent bundle needs ${join(root, part)}, which is missing (run npm run build)`, { cause: err });
        });
        await cp(join(root, part), join(dir, part), { recursive: true, verbatimSymlinks: true });
      }
    }
    await writeFile(join(dir, 'agent.env'), agentEnvText(options.env), { mode: 0o600 });
    await chmod(join(dir, 'agent.env'), 0o600);
    return { dir, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
