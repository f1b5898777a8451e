import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import type { ChosenPoint, ReplicatedItem } from '../../core/model.js';
import type { MachineDiskSpec, MachineSpec, MachineStatus, NetworkSpec } from '../../compute/driver.js';
import { PointReader } from '../../store/point-reader.js';
import { storeDiskName } from '../services/agents.js';
import type { RecoveryDeps } from './module.js';

/** Frames a recovered machine's disk keeps decoded in memory (the guest's working set reads from here). */
const SOURCE_CACHE_BYTES = 64 * 2 ** 20;
/** Decoding threads per disk source. */
const SOURCE_WORKERS = 2;
/** How long a machine gets to shut down gracefully before it is powered off. */
const STOP_TIMEOUT_MS = 60_000;

export type MachinePurpose = 'test' | 'failover';

/** The driver's id of an item's test or replica machine (MACHINE_ID in src/compute/driver.ts). */
export function machineIdOf(purpose: MachinePurpose, itemId: string): string {
  return `${purpose}-${itemId.toLowerCase()}`;
}

/**
 * Where a replica machine is plugged (the item's compute `network`): null → `user`,
 * `isolated`, `none`, `user`, `bridge:<name>`, `tap:<ifname>`. VALIDATION otherwise.
 */
export function networkOf(setting: string | null): NetworkSpec {
  if (setting === null || setting === 'user') return { kind: 'user' };
  if (setting === 'isolated') return { kind: 'isolated' };
  if (setting === 'none') return { kind: 'none' };
  const m = /^(bridge|tap):([A-Za-z0-9_.-]{1,15})$/.exec(setting);
  if (m?.[1] === 'bridge') return { kind: 'bridge', bridge: m[2] as string };
  if (m?.[1] === 'tap') return { kind: 'tap', ifname: m[2] as string };
  throw new LifeboatError('VALIDATION', `the item's network ${JSON.stringify(setting)} is none of isolated, none, user, bridge:<name>, tap:<ifname>`, {
    details: { network: setting },
  });
}

/** The network as reports and recovered machines show it. */
export function networkName(spec: NetworkSpec): string {
  if (spec.kind === 'bridge') return `bridge:${spec.bridge}`;
  if (spec.kind === 'tap') return `tap:${spec.ifname}`;
  return spec.kind;
}

/** CPUs and memory by the item's compute `size`; an unknown size gets the driver's defaults. */
const SIZES: Readonly<Record<string, { cpus: number; memoryMiB: number }>> = {
  tiny: { cpus: 1, memoryMiB: 512 },
  small: { cpus: 1, memoryMiB: 1024 },
  medium: { cpus: 2, memoryMiB: 2048 },
  large: { cpus: 4, memoryMiB: 4096 },
};

export interface MachinePlan {
  readonly id: string;
  readonly item: ReplicatedItem;
  readonly point: ChosenPoint;
  readonly network: NetworkSpec;
  readonly forwardPorts?: readonly number[];
  readonly trackChanges?: boolean;
}

/**
 * The machines the compute driver runs for items, and the point readers that serve
 * their disks (one PointReader per disk, held until the machine no longer needs its
 * sources). Every operation is idempotent, so a step run again after a vault restart
 * finds what the previous run made instead of failing on it.
 */
export class MachineSources {
  private readonly readers = new Map<string, PointReader[]>();

  constructor(private readonly deps: RecoveryDeps) {}

  /** The machine's status, or undefined when the driver holds no such machine. */
  async find(id: string): Promise<MachineStatus | undefined> {
    try {
      return await this.deps.compute.status(id);
    } catch (err) {
      if (isLifeboatError(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
  }

  /**
   * Creates the machine from the point, or, when the driver already has it (a step run
   * again), serves its sources again if nothing in this process does.
   */
  async ensureCreated(plan: MachinePlan, signal: AbortSignal): Promise<MachineStatus> {
    const existing = await this.find(plan.id);
    if (existing) {
      if (!this.readers.has(plan.id) && !existing.independent) return this.deps.compute.adopt(plan.id, await this.open(plan.id, plan.item, plan.point));
      return existing;
    }
    const disks = await this.open(plan.id, plan.item, plan.point);
    const size = SIZES[plan.item.compute.size];
    const spec: MachineSpec = {
      id: plan.id,
      name: plan.item.compute.targetName,
      disks,
      network: plan.network,
      ...(size ?? {}),
      ...(plan.forwardPorts && plan.forwardPorts.length > 0 ? { forwardPorts: plan.forwardPorts } : {}),
      ...(plan.trackChanges ? { trackChanges: true } : {}),
    };
    try {
      return await this.deps.compute.create(spec, { signal });
    } catch (err) {
      await this.release(plan.id);
      throw err;
    }
  }

  /** Stops and destroys the machine and closes its sources; a machine already gone is fine. */
  async remove(id: string, options: { graceful: boolean }): Promise<void> {
    if (await this.find(id)) {
      await this.deps.compute.stop(id, { graceful: options.graceful, timeoutMs: STOP_TIMEOUT_MS }).catch((err: unknown) => {
        if (!isLifeboatError(err, 'NOT_FOUND')) throw err;
      });
      await this.deps.compute.destroy(id);
    }
    await this.release(id);
  }

  /** Closes the machine's sources (it no longer reads them: destroyed, or independent). */
  async release(id: string): Promise<void> {
    const readers = this.readers.get(id) ?? [];
    this.readers.delete(id);
    await Promise.all(readers.map((r) => r.close()));
  }

  /**
   * After a vault restart: every recovered machine the database and the driver both
   * know, and that still reads its sources, is served them again (driver.adopt).
   * A machine that cannot be served is logged and left for its job or cleanup.
   */
  async adoptAll(): Promise<string[]> {
    const adopted: string[] = [];
    for (const row of await this.deps.repos.recoveredMachines.list()) {
      try {
        const status = await this.find(row.id);
        if (!status || status.independent || this.readers.has(row.id)) continue;
        const item = await this.deps.repos.items.get(row.itemId);
        await this.deps.compute.adopt(row.id, await this.open(row.id, item, row.point));
        adopted.push(row.id);
      } catch (err) {
        await this.release(row.id);
        this.deps.logger.error({ err, machineId: row.id, itemId: row.itemId }, 'a recovered machine could not be served its recovery point again');
      }
    }
    return adopted;
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.readers.keys()].map((id) => this.release(id)));
  }

  /** One PointReader per disk of the point, in the item's disk order (the first boots). */
  private async open(id: string, item: ReplicatedItem, point: ChosenPoint): Promise<MachineDiskSpec[]> {
    await this.release(id);
    const repo = await this.deps.stores.openVaultStore(item.vaultId);
    const readers: PointReader[] = [];
    this.readers.set(id, readers);
    try {
      const disks: MachineDiskSpec[] = [];
      for (const d of item.disks) {
        const chosen = point.disks.find((p) => p.disk === storeDiskName(item.id, d.name));
        if (!chosen) throw new LifeboatError('NOT_FOUND', `the recovery point of item ${item.id} has no point for disk ${d.name}`, { details: { item: item.id, disk: d.name } });
        const manifest = await repo.findPoint(chosen.pointId);
        if (manifest.disk !== storeDiskName(item.id, d.name)) {
          throw new LifeboatError('NOT_FOUND', `point ${chosen.pointId} is not a point of disk ${d.name} of item ${item.id}`, { details: { pointId: chosen.pointId } });
        }
        const reader = await PointReader.open(repo, manifest, { cacheBytes: SOURCE_CACHE_BYTES, workers: SOURCE_WORKERS });
        readers.push(reader);
        disks.push({ name: d.name, source: reader });
      }
      return disks;
    } catch (err) {
      await this.release(id);
      throw err;
    }
  }
}
