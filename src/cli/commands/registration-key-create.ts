import type { Command } from 'commander';
import { closeSync, fchmodSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { LifeboatError } from '../../core/errors.js';
import { connect, resolveRef } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields } from '../table.js';

/** The key text wherever the answer carries it (a string that starts with the key prefix). */
function keyText(v: unknown): { path: string[]; text: string } | undefined {
  if (typeof v === 'string') return v.startsWith('lbrk1.') ? { path: [], text: v } : undefined;
  if (v === null || typeof v !== 'object') return undefined;
  for (const [k, x] of Object.entries(v)) {
    const found = keyText(x);
    if (found) return { path: [k, ...found.path], text: found.text };
  }
  return undefined;
}

function withoutKey(v: Record<string, unknown>, path: string[], replacement: string): Record<string, unknown> {
  const [head, ...rest] = path;
  if (head === undefined) return v;
  const inner = v[head];
  return { ...v, [head]: rest.length === 0 ? replacement : withoutKey(inner as Record<string, unknown>, rest, replacement) };
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'create', 'download a registration key for a vault (valid 5 days) to register configuration servers (seed step 3)')
    .requiredOption('--vault <vault>', 'the vault, by id or name')
    .option('--out <file>', 'write the key to this file (mode 0600) instead of printing it')
    .action(async (opts: ApiFlags & { vault: string; out?: string }) => {
      const client = connect(opts, env);
      const vaultId = await resolveRef(client, '/api/v1/vaults', 'vault', opts.vault);
      const answer = await client.post<Record<string, unknown>>(`/api/v1/vaults/${encodeURIComponent(vaultId)}/registration-keys`);
      const key = keyText(answer);
      if (!key) throw new LifeboatError('API_ERROR', 'the server answered without a registration key', { details: { fields: Object.keys(answer) } });
      const expiresAt = JSON.stringify(answer).match(/"expiresAt":"([^"]+)"/)?.[1] ?? null;
      if (opts.out) {
        let fd: number;
        try {
          fd = openSync(opts.out, 'w', 0o600);
        } catch (err) {
          throw new LifeboatError('TARGET_UNWRITABLE', `cannot write the registration key to ${opts.out}`, { cause: err });
        }
        try {
          fchmodSync(fd, 0o600);
          writeSync(fd, key.text + '\n');
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        emit(opts, env, withoutKey(answer, key.path, `written to ${opts.out}`), fields([['registration key', `written to ${opts.out}`], ['vault', vaultId], ['expires', expiresAt]]));
      } else {
        emit(opts, env, answer, `${key.text}\n`);
        env.stderr.write(`registration key for vault ${vaultId}, valid until ${expiresAt ?? '?'}; keep it secret\n`);
      }
    });
}
