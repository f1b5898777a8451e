import { Agent, type AgentEvent } from '../../agent/agent.js';
import { parseAgentFileConfig, type AgentFileConfig, type DiskSpec } from '../../agent/config.js';
import { enroll } from '../../agent/enroll.js';
import { replicationTransport } from '../../agent/replication-transport.js';
import { StateDir } from '../../agent/state.js';
import { registryTrackers } from '../../agent/trackers.js';
import { HttpVaultClient } from '../../agent/vault-client.js';
import type { ApiClient } from '../api-client.js';

/** A mobility agent run inside this process for a disk image file on this host. */
export interface InProcessAgent {
  readonly itemId: string;
  readonly stateDir: string;
  /** Every event of this run, oldest first. */
  readonly events: readonly AgentEvent[];
  /** Set once the agent's run ended with an error (it does not restart by itself). */
  readonly failure: unknown;
  /** Whether run() is still going. */
  readonly running: boolean;
  /** Stops the agent (like SIGTERM: the cut in progress finishes or is aborted) and waits for it. */
  stop(): Promise<void>;
}

/** The agent configuration of one image file as disk `sda`, read by the scan tracker unless another is given. */
export function imageConfig(imagePath: string, tracker?: DiskSpec['tracker']): AgentFileConfig {
  return parseAgentFileConfig({ disks: [{ name: 'sda', tracker: tracker ?? { kind: 'scan', path: imagePath } }] });
}

/**
 * What "install the mobility service" does on a machine of this host: a one-time
 * enrollment token for the item (through the REST API, `operate`), then enrollment
 * of a fresh state directory against the vault at `vaultUrl`.
 */
export async function enrollImage(api: ApiClient, vaultUrl: string, itemId: string, stateDir: string, config: AgentFileConfig, hostname?: string): Promise<void> {
  const { token } = await api.post<{ token: string }>(`/api/v1/items/${itemId}/enrollment-token`);
  await enroll({ vaultUrl, itemId, token, config, stateDir, vault: new HttpVaultClient(vaultUrl), ...(hostname === undefined ? {} : { hostname }) });
}

/**
 * Starts the enrolled agent of `stateDir`. It talks to the vault at `vaultUrl`
 * rather than the one recorded at enrollment: an all-in-one vault may listen on
 * another port after a restart, and the agent runs next to it. The process server's
 * address comes from the vault's heartbeat answer, so it may move too.
 */
export function startAgent(options: {
  readonly stateDir: string;
  readonly config: AgentFileConfig;
  readonly vaultUrl: string;
  readonly version: string;
  readonly onEvent?: (e: AgentEvent) => void;
}): InProcessAgent {
  const state = new StateDir(options.stateDir);
  const identity = state.identity();
  const events: AgentEvent[] = [];
  const agent = new Agent({
    stateDir: options.stateDir,
    config: options.config,
    vault: new HttpVaultClient(options.vaultUrl),
    connect: replicationTransport(identity),
    openTracker: registryTrackers(state),
    heartbeatIntervalMs: 1000,
    version: options.version,
    onEvent: (e) => {
      events.push(e);
      options.onEvent?.(e);
    },
  });
  const stopping = new AbortController();
  let failure: unknown;
  let running = true;
  const run = agent
    .run(stopping.signal)
    .catch((err: unknown) => void (failure = err ?? new Error('the agent failed')))
    .finally(() => void (running = false));
  return {
    itemId: identity.itemId,
    stateDir: options.stateDir,
    events,
    get failure() {
      return failure;
    },
    get running() {
      return running;
    },
    stop: async () => {
      stopping.abort();
      await run;
    },
  };
}
