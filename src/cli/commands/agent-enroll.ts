import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { enroll, parseEnvFile } from '../../agent/enroll.js';
import { readAgentFileConfig } from '../../agent/config.js';
import { StateDir } from '../../agent/state.js';
import { HttpVaultClient } from '../../agent/vault-client.js';
import { LifeboatError } from '../../core/errors.js';
import { emit, type Env } from '../context.js';

export const DEFAULT_AGENT_STATE_DIR = '/var/lib/lifeboat/agent';
export const DEFAULT_AGENT_CONFIG = '/etc/lifeboat/agent.json';

export const CONFIG_HELP = `agent.json: the disks to protect (default $LIFEBOAT_AGENT_CONFIG, else agent.json beside --env-file or in the state dir, else ${DEFAULT_AGENT_CONFIG})`;

export interface AgentFlags {
  config?: string;
  stateDir?: string;
  envFile?: string;
  vault?: string;
  item?: string;
  tokenFile?: string;
  json?: boolean;
  quiet?: boolean;
}

export function stateDirOf(flags: AgentFlags, env: Env): string {
  return flags.stateDir ?? env.env.LIFEBOAT_AGENT_STATE_DIR ?? DEFAULT_AGENT_STATE_DIR;
}

/**
 * agent.json: --config, else $LIFEBOAT_AGENT_CONFIG (environment, then the env
 * file), else agent.json beside the env file (push install puts both in the
 * bundle directory), else in the state directory, else /etc/lifeboat/agent.json.
 */
export function configPathOf(flags: AgentFlags, env: Env): string {
  if (flags.config) return flags.config;
  if (env.env.LIFEBOAT_AGENT_CONFIG) return env.env.LIFEBOAT_AGENT_CONFIG;
  const candidates: string[] = [];
  if (flags.envFile) {
    const file = readEnvFile(flags.envFile);
    if (file.LIFEBOAT_AGENT_CONFIG) return file.LIFEBOAT_AGENT_CONFIG;
    candidates.push(join(dirname(flags.envFile), 'agent.json'));
  }
  candidates.push(join(stateDirOf(flags, env), 'agent.json'));
  return candidates.find((c) => existsSync(c)) ?? DEFAULT_AGENT_CONFIG;
}

function readEnvFile(path: string): Record<string, string> {
  try {
    return parseEnvFile(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new LifeboatError('CONFIG_INVALID', `cannot read the env file ${path}`, { cause: err });
  }
}

/** The enrollment values: flags, then the environment, then the env file (agent.env). The token is never printed. */
export function enrollmentValues(flags: AgentFlags, env: Env): { vaultUrl?: string; itemId?: string; token?: string } {
  const file = flags.envFile ? readEnvFile(flags.envFile) : {};
  let token: string | undefined;
  if (flags.tokenFile) {
    try {
      token = (readFileSync(flags.tokenFile, 'utf8').split(/\r?\n/)[0] ?? '').trim();
    } catch (err) {
      throw new LifeboatError('CONFIG_INVALID', `cannot read the token file ${flags.tokenFile}`, { cause: err });
    }
  }
  const pick = (flag: string | undefined, name: string): string | undefined => flag || env.env[name] || file[name] || undefined;
  return {
    vaultUrl: pick(flags.vault, 'LIFEBOAT_VAULT_URL'),
    itemId: pick(flags.item, 'LIFEBOAT_ITEM_ID'),
    token: pick(token, 'LIFEBOAT_ENROLLMENT_TOKEN'),
  };
}

export function addEnrollOptions(cmd: Command): Command {
  return cmd
    .option('--vault <url>', 'the vault URL (else LIFEBOAT_VAULT_URL, else the env file)')
    .option('--item <id>', 'the replicated item this machine is (else LIFEBOAT_ITEM_ID, else the env file)')
    .option('--token-file <file>', 'the one-time enrollment token, first line of this file (else LIFEBOAT_ENROLLMENT_TOKEN, else the env file)')
    .option('--env-file <file>', 'agent.env as push install wrote it (LIFEBOAT_VAULT_URL, LIFEBOAT_ITEM_ID, LIFEBOAT_ENROLLMENT_TOKEN)');
}

/** Enrolls with the values found; USAGE naming what is missing. */
export async function enrollFromFlags(flags: AgentFlags, env: Env, state: StateDir): Promise<{ machineId: string; itemId: string; processServer: string }> {
  const v = enrollmentValues(flags, env);
  const missing = [!v.vaultUrl && '--vault', !v.itemId && '--item', !v.token && '--token-file'].filter(Boolean);
  if (missing.length > 0) throw new LifeboatError('USAGE', `enrollment needs ${missing.join(', ')} (or the same in the environment or --env-file)`);
  const config = readAgentFileConfig(configPathOf(flags, env));
  const result = await enroll({
    vaultUrl: v.vaultUrl as string,
    itemId: v.itemId as string,
    token: v.token as string,
    config,
    stateDir: state.path,
    vault: new HttpVaultClient(v.vaultUrl as string),
  });
  const ps = result.config.processServer;
  return { machineId: result.machineId, itemId: result.itemId, processServer: `${ps.host}:${ps.port}` };
}

export function register(parent: Command, env: Env): void {
  addEnrollOptions(
    parent
      .command('enroll')
      .description('enroll this machine with the vault: make a key pair here, get a certificate and a credential for the one-time token')
      .option('--config <file>', CONFIG_HELP)
      .option('--state-dir <dir>', `where the agent keeps its key, certificate and state (default $LIFEBOAT_AGENT_STATE_DIR or ${DEFAULT_AGENT_STATE_DIR})`)
      .option('--force', 'enroll again although this state directory is enrolled (the old certificate is refused from then on)'),
  ).action(async (opts: AgentFlags & { force?: boolean }) => {
    const state = new StateDir(stateDirOf(opts, env));
    if (state.isEnrolled() && !opts.force) {
      const e = state.enrollment();
      throw new LifeboatError('USAGE', `${state.path} is enrolled already (machine ${e?.machineId}, item ${e?.itemId}); pass --force to enroll again`);
    }
    const r = await enrollFromFlags(opts, env, state);
    emit(opts, env, { ...r, stateDir: state.path }, `enrolled machine ${r.machineId} for item ${r.itemId}; process server ${r.processServer}; state in ${state.path}`);
  });
}
