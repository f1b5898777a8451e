import type { Command } from 'commander';
import { Agent, type AgentEvent } from '../../agent/agent.js';
import { readAgentFileConfig } from '../../agent/config.js';
import { replicationTransport } from '../../agent/replication-transport.js';
import { StateDir } from '../../agent/state.js';
import { registryTrackers } from '../../agent/trackers.js';
import { HttpVaultClient } from '../../agent/vault-client.js';
import { LifeboatError } from '../../core/errors.js';
import type { Env } from '../context.js';
import { addEnrollOptions, CONFIG_HELP, configPathOf, DEFAULT_AGENT_STATE_DIR, enrollFromFlags, enrollmentValues, stateDirOf, type AgentFlags } from './agent-enroll.js';

const MiB = 2 ** 20;

function rootOf(cmd: Command): Command {
  let c = cmd;
  while (c.parent) c = c.parent;
  return c;
}

/** One human line per event worth a line; progress at most every 5 s per disk. */
function describe(e: AgentEvent): string | undefined {
  switch (e.event) {
    case 'started':
      return `agent started for disks ${e.disks.join(', ')}`;
    case 'connected':
      return `connected to process server ${e.processServer} (acknowledged: ${Object.entries(e.acked).map(([d, n]) => `${d}=${n}`).join(', ')})`;
    case 'disconnected':
      return `process server: ${e.code}: ${e.message}; retrying in ${e.retryInMs} ms`;
    case 'tracker-opened':
      return `disk ${e.disk}: tracker ${e.continuity}${e.reason ? ` (${e.reason})` : ''}${e.continuity === 'lost' ? ': the next cut compares the whole disk' : ''}`;
    case 'recovered':
      return `disk ${e.disk}: cut ${e.cutId} from before the restart ${e.outcome === 'commit' ? 'committed (acknowledged whole)' : 'aborted (its changes are sent again)'}; next sequence ${e.nextSequence}`;
    case 'cut-started':
      return e.full ? `disk ${e.disk}: full compare started (about ${(e.estimatedBytes / MiB).toFixed(0)} MiB), from sequence ${e.firstSequence}` : undefined;
    case 'cut-committed':
      return `disk ${e.disk}: ${e.appConsistent ? 'app-consistent' : 'crash-consistent'}${e.full ? ' full' : ''} cut of ${new Date(e.capturedAtMs).toISOString()} shipped: sequences ${e.firstSequence}-${e.lastSequence}, ${(e.bytes / MiB).toFixed(1)} MiB`;
    case 'cut-aborted':
      return `disk ${e.disk}: cut ${e.cutId} aborted: ${e.reason}`;
    case 'freeze-failed':
      return `disk ${e.disk}: FREEZE_FAILED: ${e.message} (the cut is crash-consistent)`;
    case 'disk-error':
      return `disk ${e.disk}: ${e.code}: ${e.message}`;
    case 'heartbeat-failed':
      return `vault heartbeat: ${e.code}: ${e.message} (working on the last configuration)`;
    case 'config':
      return `configuration: ${e.paused ? 'paused' : 'running'}, throttle ${e.throttleBytesPerSec > 0 ? `${(e.throttleBytesPerSec / MiB).toFixed(1)} MiB/s` : 'none'}, generation ${e.generation}, mode ${e.mode}`;
    case 'mode':
      return e.mode === 'fenced'
        ? 'mode fenced: the item failed over; nothing is shipped from this machine until the vault says replicate again'
        : e.mode === 'reverse'
          ? 'mode reverse: this machine\'s disks are the target of reverse replication (reprotect, failback)'
          : 'mode replicate: replicating to the process server';
    case 'command':
      return `${e.kind} request ${e.id}: ${e.ok ? 'the command ran' : `failed: ${e.error ?? 'no reason'}`}`;
    case 'reverse-digests':
      return `reverse: digests of disks ${e.disks.join(', ')} posted (session ${e.session})`;
    case 'reverse-written':
      return `reverse: wrote ${(e.bytes / MiB).toFixed(1)} MiB up to sequence ${e.lastSequence} (session ${e.session})`;
    case 'reverse-error':
      return `reverse: ${e.code}: ${e.message}`;
    case 'digest-map-rebuilt':
      return `disk ${e.disk}: digest map rebuilt from the disk (it equals the newest point): replication goes on incrementally`;
    case 'stopped':
      return 'agent stopped';
    case 'progress':
      return `disk ${e.disk}: full compare ${e.estimatedBytes > 0 ? Math.floor((100 * e.shippedBytes) / e.estimatedBytes) : 0}% (${(e.shippedBytes / MiB).toFixed(0)}/${(e.estimatedBytes / MiB).toFixed(0)} MiB)`;
  }
}

export function register(parent: Command, env: Env, signals: AbortSignal): void {
  addEnrollOptions(
    parent
      .command('run')
      .description('replicate this machine\'s disks to the process server until stopped (SIGTERM finishes or aborts the cut in progress and exits 0)')
      .option('--config <file>', CONFIG_HELP)
      .option('--state-dir <dir>', `the agent's state (default $LIFEBOAT_AGENT_STATE_DIR or ${DEFAULT_AGENT_STATE_DIR})`),
  ).action(async (opts: AgentFlags, cmd: Command) => {
    const state = new StateDir(stateDirOf(opts, env));
    const config = readAgentFileConfig(configPathOf(opts, env));
    if (!state.isEnrolled()) {
      if (!enrollmentValues(opts, env).token) {
        throw new LifeboatError('NOT_FOUND', `the agent is not enrolled (${state.path}) and no enrollment token was given`, {
          details: { stateDir: state.path },
        });
      }
      const r = await enrollFromFlags(opts, env, state);
      env.stderr.write(`enrolled machine ${r.machineId} for item ${r.itemId}\n`);
    }
    const identity = state.identity();
    const lastProgress = new Map<string, number>();
    const agent = new Agent({
      stateDir: state.path,
      config,
      vault: new HttpVaultClient(identity.vaultUrl),
      connect: replicationTransport(identity),
      openTracker: registryTrackers(state),
      version: rootOf(cmd).version() ?? '0.0.0',
      onEvent: (e) => {
        if (opts.json) {
          env.stdout.write(JSON.stringify({ at: new Date().toISOString(), ...e }) + '\n');
          return;
        }
        if (opts.quiet && e.event !== 'disk-error' && e.event !== 'freeze-failed') return;
        if (e.event === 'progress') {
          const now = Date.now();
          if (now - (lastProgress.get(e.disk) ?? 0) < 5000) return;
          lastProgress.set(e.disk, now);
        }
        const line = describe(e);
        if (line) env.stderr.write(`lifeboat agent: ${line}\n`);
      },
    });
    await agent.run(signals);
  });
}
