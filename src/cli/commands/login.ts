import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import { ApiClient } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, normaliseServer, profilePath, PROFILE_VERSION, writeProfile, type ApiFlags } from '../profile.js';

interface Me {
  kind: string;
  id: string;
  role: string;
  user: { id: string; name: string } | null;
}

export function register(program: Command, env: Env): void {
  apiCommand(program, 'login', 'check an API token against a vault server and save both as a profile for the other commands').action(async (opts: ApiFlags) => {
    const server = opts.server ?? (env.env.LIFEBOAT_SERVER || undefined);
    const token = opts.token ?? (env.env.LIFEBOAT_TOKEN || undefined);
    if (!server) throw new LifeboatError('USAGE', 'login needs --server URL (or LIFEBOAT_SERVER)');
    if (!token) throw new LifeboatError('USAGE', 'login needs --token TOKEN (or LIFEBOAT_TOKEN)');
    const target = { server: normaliseServer(server), token };
    const me = await new ApiClient(target).get<Me>('/api/v1/me');
    const path = profilePath(opts, env);
    const principal = { kind: me.kind, id: me.id, role: me.role, user: me.user?.name ?? null };
    writeProfile(path, { version: PROFILE_VERSION, ...target, principal, savedAt: new Date().toISOString() });
    emit(opts, env, { server: target.server, profile: path, principal }, `logged in to ${target.server} as ${principal.user ?? principal.id} (${me.role}); profile saved in ${path}`);
  });
}
