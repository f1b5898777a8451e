import { LifeboatError } from '../../core/errors.js';
import type { ReplicatedItem } from '../../core/model.js';
import type { RecoveryDeps } from '../recovery/module.js';

/**
 * Shuts the protected (source) machine down: through its agent's shutdown command when
 * the agent heartbeats, else over SSH with the item's push account. Resolves with how it
 * was done ("agent", "ssh"); throws saying why it could not (failover records that on
 * its optional step and carries on).
 */
export async function shutDownSource(_deps: RecoveryDeps, item: ReplicatedItem, _signal: AbortSignal): Promise<string> {
  throw new LifeboatError('UNSUPPORTED', `shutting down the source of item ${item.id} is not built yet`);
}
