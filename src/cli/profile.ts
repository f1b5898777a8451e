/**
 * Where the control-plane commands find their server and token: flags, then
 * LIFEBOAT_SERVER / LIFEBOAT_TOKEN, then the profile `lifeboat login` saved.
 *
 * A profile is one small JSON file, `$LIFEBOAT_CONFIG_DIR/profile.json` (default
 * `~/.config/lifeboat/profile.json`); `--profile NAME` (or LIFEBOAT_PROFILE) uses
 * `profile-NAME.json` beside it. The file holds a bearer token, so it is written
 * atomically with mode 0600 in a 0700 directory, and the token is never printed.
 */
import { Option, type Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { LifeboatError } from '../core/errors.js';
import type { Env } from './context.js';

export const PROFILE_VERSION = 1;
const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export interface Profile {
  readonly version: typeof PROFILE_VERSION;
  readonly server: string;
  readonly token: string;
  /** Who the token belongs to, as GET /api/v1/me answered at login. */
  readonly principal?: { readonly kind: string; readonly id: string; readonly role: string; readonly user: string | null };
  readonly savedAt: string;
}

/** Options every control-plane command accepts. */
export interface ApiFlags {
  server?: string;
  token?: string;
  profile?: string;
  json?: boolean;
}

/** The resolved target of a control-plane command. */
export interface ApiTarget {
  readonly server: string;
  /** Empty for the one route a caller reaches without a token (configuration server registration). */
  readonly token: string;
}

/** Commands that talk to a vault server: main.ts gives them no store options. */
const apiCommands = new WeakSet<Command>();

export function isApiCommand(cmd: Command): boolean {
  return apiCommands.has(cmd);
}

/** Declares a control-plane subcommand with --server, --token, --profile and --json. */
export function apiCommand(parent: Command, nameAndArgs: string, description: string): Command {
  const cmd = parent.command(nameAndArgs).description(description);
  cmd.option('--server <url>', 'vault server URL (else LIFEBOAT_SERVER, else the saved profile)');
  cmd.option('--token <token>', 'API token (else LIFEBOAT_TOKEN, else the saved profile); prefer the environment, flags show in ps');
  cmd.option('--profile <name>', 'use the profile saved under this name by lifeboat login --profile NAME (else LIFEBOAT_PROFILE)');
  cmd.addOption(new Option('--json', 'print the result as JSON for scripts'));
  apiCommands.add(cmd);
  return cmd;
}

export function configDir(env: Env): string {
  return env.env.LIFEBOAT_CONFIG_DIR ?? join(env.env.HOME ?? homedir(), '.config', 'lifeboat');
}

export function profilePath(flags: ApiFlags, env: Env): string {
  const name = flags.profile ?? (env.env.LIFEBOAT_PROFILE || 'default');
  if (!PROFILE_NAME.test(name)) throw new LifeboatError('USAGE', `profile name ${JSON.stringify(name)} must be letters, digits, - and _ (at most 64)`);
  return join(configDir(env), name === 'default' ? 'profile.json' : `profile-${name}.json`);
}

/** The saved profile, or undefined when there is none. A damaged file is an error, not "logged out". */
export function readProfile(path: string): Profile | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LifeboatError('CONFIG_INVALID', `cannot read the profile ${path}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new LifeboatError('CONFIG_INVALID', `the profile ${path} is not JSON; log in again (lifeboat login) to rewrite it`);
  }
  const p = parsed as Partial<Profile> | null;
  if (!p || p.version !== PROFILE_VERSION || typeof p.server !== 'string' || typeof p.token !== 'string')
    throw new LifeboatError('CONFIG_INVALID', `the profile ${path} has no server and token of version ${PROFILE_VERSION}; log in again to rewrite it`);
  return p as Profile;
}

/** Writes the profile atomically (temp, fsync, rename), readable by its owner only. */
export function writeProfile(path: string, profile: Profile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, JSON.stringify(profile, null, 2) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new LifeboatError('CONFIG_INVALID', `cannot save the profile ${path}`, { cause: err });
  }
}

/** Removes the profile; answers whether there was one. */
export function removeProfile(path: string): boolean {
  const existed = readProfileQuietly(path);
  rmSync(path, { force: true });
  return existed;
}

function readProfileQuietly(path: string): boolean {
  try {
    readFileSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Normalises a server URL: http(s) only, no trailing slash, no path beyond the origin. */
export function normaliseServer(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new LifeboatError('USAGE', `server ${JSON.stringify(url)} is not a URL; it looks like http://127.0.0.1:8720`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new LifeboatError('USAGE', `server ${url} must be http:// or https://`);
  if (u.username || u.password) throw new LifeboatError('USAGE', 'the server URL must not carry credentials; pass --token or LIFEBOAT_TOKEN');
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

/** Flags, then environment, then the saved profile; each of server and token on its own. */
export function resolveTarget(flags: ApiFlags, env: Env, options: { tokenOptional?: boolean } = {}): ApiTarget {
  // An empty variable counts as unset.
  const fromEnv = (name: string): string | undefined => env.env[name] || undefined;
  const needProfile = !(flags.server ?? fromEnv('LIFEBOAT_SERVER')) || !(flags.token ?? fromEnv('LIFEBOAT_TOKEN'));
  const profile = needProfile ? readProfile(profilePath(flags, env)) : undefined;
  const server = flags.server ?? fromEnv('LIFEBOAT_SERVER') ?? profile?.server;
  const token = flags.token ?? fromEnv('LIFEBOAT_TOKEN') ?? profile?.token;
  if (!server || (!token && !options.tokenOptional))
    throw new LifeboatError('UNAUTHENTICATED', `no ${!server ? 'server' : 'token'} given and no saved profile${flags.profile ? ` ${flags.profile}` : ''}`, {
      details: { profile: profilePath(flags, env) },
    });
  return { server: normaliseServer(server), token: token ?? '' };
}
