import type { Command } from 'commander';
import type { ReplicationControl } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { controlText } from './replication-throttle.js';

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'pause <item>', "pause an item's replication: its agent stops shipping at its next heartbeat and keeps the changes").action(
    async (id: string, opts: ApiFlags) => {
      const control = await connect(opts, env).post<ReplicationControl>(`/api/v1/items/${encodeURIComponent(id)}/pause`, {});
      emit(opts, env, control, controlText(control));
    },
  );
}
