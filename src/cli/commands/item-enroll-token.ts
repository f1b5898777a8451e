import type { Command } from 'commander';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'enroll-token <item>', "print a one-time token (valid 24 h) the item's agent enrolls with (docs/replication.md)").action(
    async (id: string, opts: ApiFlags) => {
      const answer = await connect(opts, env).post<{ itemId: string; token: string; expiresAt: string }>(`/api/v1/items/${encodeURIComponent(id)}/enrollment-token`, {});
      emit(
        opts,
        env,
        answer,
        [
          `enrollment token for item ${answer.itemId} (one use, expires ${answer.expiresAt}; shown only now):`,
          `  ${answer.token}`,
          `on the machine: lifeboat agent enroll --item ${answer.itemId} --token-file FILE (or LIFEBOAT_ENROLLMENT_TOKEN in agent.env)`,
        ].join('\n'),
      );
    },
  );
}
