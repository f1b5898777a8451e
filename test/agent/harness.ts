import { randomBytes } from 'node:crypto';
import { Agent, type AgentEvent, type AgentOptions } from '../../src/agent/agent.js';
import { parseAgentFileConfig, type AgentConfig } from '../../src/agent/config.js';
import type { Freezer } from '../../src/agent/freeze.js';
import { FakeDisk } from '../../src/changetracking/fake/fake-tracker.js';
import { agentConfig, FakeClock, FakeProcessServer, FakeVault, ITEM_ID, replay, tempDir } from './fakes.js';

export const STORE_DISK = `${ITEM_ID}.vda`;

export interface HarnessOptions {
  readonly sizeBytes?: number;
  readonly config?: Partial<AgentConfig>;
  readonly maxBytesPerSec?: number;
  readonly maxSegmentBytes?: number;
  readonly freezer?: Freezer;
  readonly freeze?: { mountPoints: string[]; timeoutMs?: number };
  readonly stateDir?: string;
}

/**
 * One agent over a fake disk, an in-memory process server and a fake vault,
 * on a fake clock. `start()` runs it; `stop()` aborts like SIGTERM and waits.
 */
export class Harness {
  readonly clock = new FakeClock();
  readonly disk: FakeDisk;
  readonly ps: FakeProcessServer;
  readonly vault: FakeVault;
  readonly events: AgentEvent[] = [];
  readonly dir: { path: string; cleanup: () => void };
  agent!: Agent;
  private controller: AbortController | undefined;
  private running: Promise<void> | undefined;
  finished = false;
  runError: unknown;

  constructor(private readonly options: HarnessOptions = {}) {
    this.disk = new FakeDisk({ sizeBytes: options.sizeBytes ?? 256 * 1024, clock: this.clock.now });
    this.ps = new FakeProcessServer(this.clock.now);
    this.vault = new FakeVault(agentConfig(options.config));
    this.dir = options.stateDir ? { path: options.stateDir, cleanup: () => undefined } : tempDir('agent');
  }

  make(extra: Partial<AgentOptions> = {}): Agent {
    const config = parseAgentFileConfig({
      disks: [{ name: 'vda', tracker: { kind: 'qemu' } }],
      maxBytesPerSec: this.options.maxBytesPerSec ?? 0,
      ...(this.options.freeze ? { freeze: this.options.freeze } : {}),
    });
    this.agent = new Agent({
      stateDir: this.dir.path,
      config,
      initialConfig: this.vault.config,
      identity: { machineId: 'machine-1', itemId: ITEM_ID, credential: 'lbagent_secret_credential' },
      vault: this.vault,
      connect: this.ps.connect,
      openTracker: async () => this.disk.tracker(),
      clock: this.clock,
      onEvent: (e) => this.events.push(e),
      version: 'test',
      ...(this.options.maxSegmentBytes ? { maxSegmentBytes: this.options.maxSegmentBytes } : {}),
      ...(this.options.freezer ? { freezer: this.options.freezer } : {}),
      ...extra,
    });
    return this.agent;
  }

  start(extra: Partial<AgentOptions> = {}): Agent {
    const agent = this.make(extra);
    this.controller = new AbortController();
    this.finished = false;
    this.running = agent.run(this.controller.signal).then(
      () => {
        this.finished = true;
      },
      (err: unknown) => {
        this.finished = true;
        this.runError = err;
      },
    );
    return agent;
  }

  async stop(): Promise<void> {
    this.controller?.abort();
    await this.clock.until(() => this.finished, 'the agent to stop');
    await this.running;
    if (this.runError) throw this.runError;
  }

  count(event: AgentEvent['event']): number {
    return this.events.filter((e) => e.event === event).length;
  }

  of<E extends AgentEvent['event']>(event: E): Extract<AgentEvent, { event: E }>[] {
    return this.events.filter((e): e is Extract<AgentEvent, { event: E }> => e.event === event);
  }

  async untilCommitted(n: number): Promise<void> {
    await this.clock.until(() => this.count('cut-committed') >= n, `${n} committed cut(s)`);
  }

  stored(generation = 1) {
    return this.ps.stored(STORE_DISK, generation);
  }

  /** The disk as the replica processor would rebuild it from what the process server holds. */
  replica(generation = 1): Buffer {
    return replay(this.stored(generation), this.disk.sizeBytes).bytes;
  }

  fill(offset: number, length: number): Buffer {
    const data = randomBytes(length);
    this.disk.write(offset, data);
    return data;
  }

  cleanup(): void {
    this.controller?.abort();
    this.dir.cleanup();
  }
}
