import { rmSync } from 'node:fs';
import { StateDir } from '../../agent/state.js';
import { isLifeboatError } from '../../core/errors.js';
import { ApiClient } from '../api-client.js';
import type { VaultLogger } from '../../vault/logging/logger.js';
import { enrollImage, imageConfig, startAgent, type InProcessAgent } from './agents.js';
import { samplePaths, SampleWriter } from './sample-machine.js';
import { readSecret, SAMPLE_MACHINES, SAMPLE_OS, sampleIp, sitePaths, type Site, type SiteState } from './site.js';
import { sleep } from '../../core/sleep.js';

/** How often the supervisor looks at the vault. */
const POLL_MS = 2000;

/**
 * This host, as the sample machines' host and their configuration server: keeps a
 * writer busy on every sample disk, runs the agent of every sample machine that has
 * one (from its state directory), and installs the agent of a sample machine whose
 * item waits for it ("Enable replication" with a manual install: the job's "Install
 * the mobility service" step waits for the agent to enroll). Every 2 s, through the
 * REST API as the owner; it also heartbeats as the configuration server `this-host`.
 */
export class Supervisor {
  readonly writers = new Map<string, SampleWriter>();
  readonly agents = new Map<string, InProcessAgent>();
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  /** The process server's bytes received at the previous heartbeat, for its throughput. */
  private lastBytesIn: { bytes: number; atMs: number } | undefined;

  constructor(
    private readonly site: Site,
    private readonly state: SiteState,
    private readonly api: ApiClient,
    private readonly logger: VaultLogger,
  ) {}

  /** Starts the writers and the agents already enrolled, then the polling loop. */
  async start(): Promise<void> {
    for (const name of Object.keys(this.state.machines)) {
      const { image, agentDir } = samplePaths(this.site.dir, name);
      this.writers.set(name, await SampleWriter.start(image, (err) => this.logger.error({ err, machine: name }, 'sample writer failed')));
      if (new StateDir(agentDir).isEnrolled()) this.runAgent(name);
    }
    await this.tick();
    this.loop = (async () => {
      while (!this.stopping.signal.aborted) {
        await sleep(POLL_MS, this.stopping.signal);
        if (this.stopping.signal.aborted) return;
        await this.tick().catch((err: unknown) => this.logger.warn({ err }, 'quickstart supervisor round failed'));
      }
    })();
  }

  private runAgent(name: string): InProcessAgent {
    const { image, agentDir } = samplePaths(this.site.dir, name);
    const agent = startAgent({ stateDir: agentDir, config: imageConfig(image), vaultUrl: this.site.server.url, version: 'quickstart' });
    this.agents.set(name, agent);
    return agent;
  }

  /** One round: heartbeat as this host, restart a failed agent, install the agent of an item waiting for one. */
  private async tick(): Promise<void> {
    await this.heartbeat().catch((err: unknown) => this.logger.warn({ err }, 'configuration server heartbeat failed'));
    const items = await this.site.sampleItems(this.api, this.state);
    for (const [name, item] of items) {
      const running = this.agents.get(name);
      if (running && !running.running) {
        this.logger.error({ err: running.failure, machine: name, itemId: item.id }, 'sample agent stopped; restarting it');
        this.agents.delete(name);
        if (running.itemId === item.id) this.runAgent(name);
        continue;
      }
      if (item.state !== 'enabling' || (running && running.itemId === item.id)) continue;
      // The item waits for its agent: install it (a fresh state directory, enrolled with a one-time token).
      if (running) {
        await running.stop();
        this.agents.delete(name);
      }
      if (await this.hasAgent(item.id)) continue;
      const { image, agentDir } = samplePaths(this.site.dir, name);
      rmSync(agentDir, { recursive: true, force: true });
      await enrollImage(this.api, this.site.server.url, item.id, agentDir, imageConfig(image), name);
      this.logger.info({ machine: name, itemId: item.id }, 'sample agent installed');
      this.runAgent(name);
    }
  }

  /**
   * The heartbeat of `this-host`: its built-in process server's spool and throughput
   * (the process server running in this process), and, when an operator asked for a
   * refresh, the discovery report: the sample machines as this host runs them.
   */
  private async heartbeat(): Promise<void> {
    const host = new ApiClient({ server: this.site.server.url, token: readSecret(sitePaths(this.site.dir).configServerCredential) });
    const stats = this.site.processServer.stats();
    const now = Date.now();
    const last = this.lastBytesIn;
    const seconds = last ? (now - last.atMs) / 1000 : 0;
    this.lastBytesIn = { bytes: stats.bytesIn, atMs: now };
    const processServers = [
      {
        name: 'built-in',
        spoolUsedBytes: stats.spoolUsedBytes,
        spoolLimitBytes: stats.spoolLimitBytes,
        throughputBytesPerSec: last && seconds > 0 ? Math.max(0, Math.round((stats.bytesIn - last.bytes) / seconds)) : 0,
      },
    ];
    const url = `/api/v1/config-servers/${this.state.configServerId}/heartbeat`;
    const answer = await host.post<{ refreshRequested: boolean }>(url, { version: '0.1.0', clock: new Date(now).toISOString(), processServers });
    if (!answer.refreshRequested) return;
    const discovered = SAMPLE_MACHINES.map((name, i) => ({ name, privateIp: sampleIp(i), os: SAMPLE_OS }));
    await host.post(url, { version: '0.1.0', clock: new Date().toISOString(), processServers, discovered });
  }

  /** Whether the vault knows an agent of the item (one enrolled by hand elsewhere is left alone). */
  private async hasAgent(itemId: string): Promise<boolean> {
    try {
      await this.api.get(`/api/v1/items/${itemId}/agent`);
      return true;
    } catch (err) {
      if (isLifeboatError(err, 'NOT_FOUND')) return false;
      throw err;
    }
  }

  /** Stops the loop, the agents and the writers. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
    await Promise.all([...this.agents.values()].map((a) => a.stop()));
    await Promise.all([...this.writers.values()].map((w) => w.stop()));
  }
}
