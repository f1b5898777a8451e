import type { Command } from 'commander';
import { StateDir } from '../../agent/state.js';
import { emit, type Env } from '../context.js';
import { fields, table } from '../table.js';
import { DEFAULT_AGENT_STATE_DIR, stateDirOf, type AgentFlags } from './agent-enroll.js';

export function register(parent: Command, env: Env): void {
  parent
    .command('status')
    .description("the agent's state directory: enrollment, and per disk the generation, next sequence, last committed cut and the cut in flight")
    .option('--state-dir <dir>', `the agent's state (default $LIFEBOAT_AGENT_STATE_DIR or ${DEFAULT_AGENT_STATE_DIR})`)
    .action(async (opts: AgentFlags) => {
      const state = new StateDir(stateDirOf(opts, env));
      const enrollment = state.enrollment() ?? null;
      const config = enrollment ? (state.config() ?? null) : null;
      const disks = state.diskNames().map((name) => {
        const s = state.diskState(name);
        return {
          name,
          storeDisk: config?.disks.find((d) => d.name === name)?.storeDisk ?? (enrollment ? `${enrollment.itemId}.${name}` : null),
          generation: s?.generation ?? null,
          nextSequence: s?.nextSequence ?? null,
          lastCommittedAt: s?.lastCommitted ? new Date(s.lastCommitted.capturedAtMs).toISOString() : null,
          lastCommittedSequence: s?.lastCommitted?.lastSequence ?? null,
          lastAppConsistentAt: s?.lastAppConsistentAtMs ? new Date(s.lastAppConsistentAtMs).toISOString() : null,
          inFlight: s?.inFlight ?? null,
        };
      });
      const result = {
        stateDir: state.path,
        enrolled: enrollment !== null,
        machineId: enrollment?.machineId ?? null,
        itemId: enrollment?.itemId ?? null,
        vaultUrl: enrollment?.vaultUrl ?? null,
        paused: config?.paused ?? null,
        processServer: config ? `${config.processServer.host}:${config.processServer.port}` : null,
        disks,
      };
      const human = [
        fields([
          ['state dir', state.path],
          ['enrolled', enrollment ? `machine ${enrollment.machineId}, item ${enrollment.itemId}` : 'no'],
          ['vault', enrollment?.vaultUrl],
          ['process server', result.processServer],
          ['paused', config?.paused],
        ]),
        '',
        table(
          ['disk', 'generation', 'next sequence', 'last committed cut', 'in flight'],
          disks.map((d) => [
            d.name,
            d.generation,
            d.nextSequence,
            d.lastCommittedAt,
            d.inFlight ? `${d.inFlight.cutId} from ${d.inFlight.firstSequence}${d.inFlight.lastSequence !== undefined ? ` to ${d.inFlight.lastSequence}` : ''}` : null,
          ]),
          'no disk has replicated yet',
        ),
      ].join('\n');
      emit(opts, env, result, human);
    });
}
