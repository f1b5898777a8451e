import type { RpoHistory } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';
import { Periodic } from './periodic.js';

/** Samples are kept this long. */
export const RPO_SAMPLE_RETENTION_MS = 7 * 24 * 3_600_000;
/** An answer carries at most this many samples; longer histories are thinned evenly. */
export const MAX_RPO_SAMPLES = 2000;

/**
 * The RPO of items over time, for the portal's chart. Every `intervalMs` the sampler
 * writes one sample per item whose RPO is known (the replica processor keeps
 * `rpoSeconds` fresh) and deletes samples older than 7 days. The clock is injected;
 * `sampleOnce` is what each tick runs.
 */
export class RpoSampler {
  private readonly loop: Periodic;

  constructor(
    private readonly options: {
      readonly repos: Repositories;
      readonly now: () => Date;
      /** Default 60 s. */
      readonly intervalMs?: number;
      readonly onError?: (err: unknown) => void;
    },
  ) {
    this.loop = new Periodic(() => this.sampleOnce(), options.intervalMs ?? 60_000, options.onError);
  }

  /** Writes one sample per item with a known RPO, prunes old ones; returns how many were written. */
  async sampleOnce(): Promise<number> {
    const { repos, now } = this.options;
    const at = now();
    const samples = (await repos.items.list())
      .filter((i) => i.rpoSeconds !== null)
      .map((i) => ({ itemId: i.id, at: at.toISOString(), rpoSeconds: i.rpoSeconds as number }));
    await repos.rpoSamples.append(samples);
    await repos.rpoSamples.deleteBefore(new Date(at.getTime() - RPO_SAMPLE_RETENTION_MS).toISOString());
    return samples.length;
  }

  /** The item's samples of the last `hours` hours, oldest first, at most MAX_RPO_SAMPLES; NOT_FOUND for an unknown item. */
  async history(itemId: string, hours: number): Promise<RpoHistory> {
    const { repos, now } = this.options;
    const item = await repos.items.get(itemId);
    const policy = await repos.policies.get(item.policyId);
    const since = new Date(now().getTime() - hours * 3_600_000).toISOString();
    const samples = thinEvenly(await repos.rpoSamples.list(itemId, since), MAX_RPO_SAMPLES).map((s) => ({ at: s.at, rpoSeconds: s.rpoSeconds }));
    return { itemId, thresholdSeconds: policy.rpoThresholdSeconds, samples };
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}

/** At most `max` of `list`, evenly spread, the first and the last always among them. */
export function thinEvenly<T>(list: readonly T[], max: number): T[] {
  if (list.length <= max) return [...list];
  if (max <= 1) return list.slice(-max);
  return Array.from({ length: max }, (_, i) => list[Math.round((i * (list.length - 1)) / (max - 1))] as T);
}
