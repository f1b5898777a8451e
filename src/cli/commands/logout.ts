import type { Command } from 'commander';
import { emit, type Env } from '../context.js';
import { apiCommand, profilePath, removeProfile, type ApiFlags } from '../profile.js';

export function register(program: Command, env: Env): void {
  apiCommand(program, 'logout', 'forget the saved profile (the token stays valid on the server; revoke it there)').action((opts: ApiFlags) => {
    const path = profilePath(opts, env);
    const removed = removeProfile(path);
    emit(opts, env, { profile: path, removed }, removed ? `removed the profile ${path}` : `no profile at ${path}`);
  });
}
