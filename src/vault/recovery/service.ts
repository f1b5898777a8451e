import { LifeboatError } from '../../core/errors.js';
import type { DrillReport, DrillSettings, DrillSummary, Probe, RecoveredMachine } from '../../core/model.js';
import type { Repositories } from '../db/repositories/index.js';

/** Seconds a drill waits for the boot marker and the probes by default (DrillSettings). */
export const DEFAULT_BOOT_TIMEOUT_SECONDS = 600;

export interface DrillSettingsInput {
  readonly probes: readonly Probe[];
  readonly bootMarker: string | null;
  readonly bootTimeoutSeconds?: number;
  readonly scheduleEveryHours: number | null;
}

/** What the API reads of recovery, and the item's drill settings. */
export class RecoveryReads {
  constructor(
    private readonly repos: Repositories,
    private readonly now: () => Date,
  ) {}

  async reports(itemId: string): Promise<DrillReport[]> {
    await this.repos.items.get(itemId);
    return this.repos.drillReports.listByItem(itemId);
  }

  /**
   * For every item, its newest drill report and its newest passed one: the overview's
   * "latest drill" and "test recommended" in one request, whatever the number of items.
   */
  async summary(): Promise<DrillSummary[]> {
    const out: DrillSummary[] = [];
    for (const item of await this.repos.items.list()) {
      const all = await this.repos.drillReports.listByItem(item.id, Number.MAX_SAFE_INTEGER);
      out.push({ itemId: item.id, latest: all[0] ?? null, lastPassed: all.find((r) => r.outcome === 'passed') ?? null });
    }
    return out;
  }

  report(id: string): Promise<DrillReport> {
    return this.repos.drillReports.get(id);
  }

  async machines(itemId: string): Promise<RecoveredMachine[]> {
    await this.repos.items.get(itemId);
    return this.repos.recoveredMachines.listByItem(itemId);
  }

  /** The item's drill settings; an item never given any has the defaults (no probes, no marker, no schedule). */
  async settings(itemId: string): Promise<DrillSettings> {
    const item = await this.repos.items.get(itemId);
    return (
      (await this.repos.drillSettings.find(itemId)) ?? {
        id: itemId,
        subjectKind: 'item',
        probes: [],
        bootMarker: null,
        bootTimeoutSeconds: DEFAULT_BOOT_TIMEOUT_SECONDS,
        scheduleEveryHours: null,
        nextRunAt: null,
        lastRunAt: null,
        updatedAt: item.updatedAt,
      }
    );
  }

  /** Replaces the item's drill settings; a schedule's first drill is due one period from now. */
  async putSettings(itemId: string, input: DrillSettingsInput): Promise<DrillSettings> {
    await this.repos.items.get(itemId);
    const errors: { field: string; value: unknown; message: string }[] = [];
    if (input.bootMarker !== null) {
      try {
        new RegExp(input.bootMarker);
      } catch (err) {
        errors.push({ field: 'bootMarker', value: input.bootMarker, message: `not a regular expression: ${(err as Error).message}` });
      }
    }
    const names = new Set<string>();
    input.probes.forEach((p, i) => {
      if (names.has(p.name)) errors.push({ field: `probes/${i}/name`, value: p.name, message: 'probe names must be unique' });
      names.add(p.name);
    });
    if (errors.length > 0) throw new LifeboatError('VALIDATION', `invalid drill settings: ${errors.map((e) => `${e.field} ${e.message}`).join('; ')}`, { details: { errors } });
    const previous = await this.repos.drillSettings.find(itemId);
    const every = input.scheduleEveryHours;
    const nextRunAt = every === null ? null : new Date(this.now().getTime() + every * 3600_000).toISOString();
    return this.repos.drillSettings.put({
      id: itemId,
      subjectKind: 'item',
      probes: input.probes,
      bootMarker: input.bootMarker,
      bootTimeoutSeconds: input.bootTimeoutSeconds ?? DEFAULT_BOOT_TIMEOUT_SECONDS,
      scheduleEveryHours: every,
      nextRunAt,
      lastRunAt: previous?.lastRunAt ?? null,
    });
  }
}
