import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import type { ChosenPoint, ItemPoint, ItemPoints, PointChoice, ReplicatedItem } from '../../core/model.js';
import { pointCapturedAt, type PointManifest } from '../../format/manifest.js';
import type { Repository } from '../../store/repository.js';
import { storeDiskName } from '../services/agents.js';

/**
 * Choosing an item's recovery point (docs/recovery.md, "Choosing a recovery point"):
 * one point per disk of the item, in the item's disk order, each named by its store
 * disk (`<itemId>.<disk>`, as `lifeboat point list` shows it). `point` takes the named
 * point on its own disk and, on the others, the newest point captured at or before
 * it; `time` takes on every disk the newest point captured at or before the time.
 * NOT_FOUND, naming the disk, when a disk has no such point. `latest` is
 * `latest-processed` here: the caller processes what is pending first.
 */
export async function resolvePoint(repo: Repository, item: ReplicatedItem, choice: PointChoice): Promise<ChosenPoint> {
  if (item.disks.length === 0) throw new LifeboatError('NOT_FOUND', `item ${item.id} has no disks yet, so no recovery point`, { details: { item: item.id } });
  const chosen = (manifests: readonly PointManifest[]): ChosenPoint => ({
    choice,
    disks: item.disks.map((d, i) => {
      const m = manifests[i] as PointManifest;
      return { disk: storeDiskName(item.id, d.name), pointId: m.pointId, capturedAt: pointCapturedAt(m), consistency: m.consistency };
    }),
  });
  const missing = (disk: string, what: string): LifeboatError =>
    new LifeboatError('NOT_FOUND', `disk ${disk} of item ${item.id} has no ${what}`, { details: { item: item.id, disk, choice } });

  switch (choice.kind) {
    case 'latest':
    case 'latest-processed': {
      const out: PointManifest[] = [];
      for (const d of item.disks) {
        const newest = await repo.latestPoint(storeDiskName(item.id, d.name));
        if (!newest) throw missing(d.name, 'recovery point yet');
        out.push(newest);
      }
      return chosen(out);
    }
    case 'latest-app-consistent': {
      const out: PointManifest[] = [];
      for (const d of item.disks) {
        const app = (await repo.listPoints(storeDiskName(item.id, d.name))).filter((p) => p.consistency === 'app');
        const newest = newestCaptured(app, Infinity);
        if (!newest) throw missing(d.name, 'app-consistent recovery point');
        out.push(newest);
      }
      return chosen(out);
    }
    case 'time': {
      const atMs = Date.parse(choice.at);
      if (Number.isNaN(atMs)) throw new LifeboatError('VALIDATION', `${JSON.stringify(choice.at)} is not an ISO-8601 time`, { details: { at: choice.at } });
      return chosen(await atOrBefore(repo, item, atMs, undefined, (disk) => missing(disk, `recovery point captured at or before ${new Date(atMs).toISOString()}`)));
    }
    case 'point': {
      let named: PointManifest;
      try {
        named = await repo.findPoint(choice.pointId);
      } catch (err) {
        if (isLifeboatError(err, 'NOT_FOUND')) {
          throw new LifeboatError('NOT_FOUND', `item ${item.id} has no recovery point ${choice.pointId}`, { details: { item: item.id, pointId: choice.pointId } });
        }
        throw err;
      }
      const own = item.disks.find((d) => storeDiskName(item.id, d.name) === named.disk);
      if (!own) throw new LifeboatError('NOT_FOUND', `recovery point ${choice.pointId} is not a point of item ${item.id}`, { details: { item: item.id, pointId: choice.pointId } });
      const atMs = Date.parse(pointCapturedAt(named));
      return chosen(
        await atOrBefore(repo, item, atMs, named, (disk) => missing(disk, `recovery point captured at or before point ${named.pointId} (${pointCapturedAt(named)})`)),
      );
    }
  }
}

async function atOrBefore(
  repo: Repository,
  item: ReplicatedItem,
  atMs: number,
  named: PointManifest | undefined,
  missing: (disk: string) => LifeboatError,
): Promise<PointManifest[]> {
  const out: PointManifest[] = [];
  for (const d of item.disks) {
    const disk = storeDiskName(item.id, d.name);
    if (named?.disk === disk) {
      out.push(named);
      continue;
    }
    const found = newestCaptured(await repo.listPoints(disk), atMs);
    if (!found) throw missing(d.name);
    out.push(found);
  }
  return out;
}

/** The newest point (by capture time, then id) captured at or before `atMs`. */
function newestCaptured(points: readonly PointManifest[], atMs: number): PointManifest | undefined {
  let best: { m: PointManifest; at: number } | undefined;
  for (const m of points) {
    const at = Date.parse(pointCapturedAt(m));
    if (at > atMs) continue;
    if (!best || at > best.at || (at === best.at && m.pointId > best.m.pointId)) best = { m, at };
  }
  return best?.m;
}

/** The earliest capture time of the chosen points (what the RPO is measured from). */
export function oldestCapture(point: ChosenPoint): number {
  return Math.min(...point.disks.map((d) => Date.parse(d.capturedAt)));
}

/**
 * Manifests already read, by store disk and point id. A manifest never changes once
 * written, so a page that asks for an item's points every few seconds costs one listing
 * of names per disk and a read of each new point only, not a read of every point; what
 * the listing no longer names is forgotten.
 */
export class ManifestCache {
  private readonly byDisk = new Map<string, Map<string, PointManifest>>();

  /** The manifests of `disk`'s points as the store names them now (a point pruned meanwhile is left out). */
  async points(repo: Repository, disk: string): Promise<PointManifest[]> {
    const known = this.byDisk.get(disk) ?? new Map<string, PointManifest>();
    const now = new Map<string, PointManifest>();
    for (const id of await repo.listPointIds(disk)) {
      const m =
        known.get(id) ??
        (await repo.readPoint(disk, id).catch((err: unknown) => {
          if (isLifeboatError(err) && err.code === 'NOT_FOUND') return undefined;
          throw err;
        }));
      if (m) now.set(id, m);
    }
    this.byDisk.set(disk, now);
    return [...now.values()];
  }
}

/**
 * The item's points on all its disks, newest first by capture time (then id), at most
 * `limit`; and per disk (in the item's disk order) its newest point and its newest
 * app-consistent point — what `latest-processed` and `latest-app-consistent` would
 * choose. An item without disks has no points; the store is not opened then.
 */
export async function listItemPoints(openStore: () => Promise<Repository>, item: ReplicatedItem, limit: number, cache = new ManifestCache()): Promise<ItemPoints> {
  if (item.disks.length === 0) return { items: [], latestProcessed: [], latestAppConsistent: [] };
  const repo = await openStore();
  const all: ItemPoint[] = [];
  const latestProcessed: ItemPoint[] = [];
  const latestAppConsistent: ItemPoint[] = [];
  for (const d of item.disks) {
    const manifests = await cache.points(repo, storeDiskName(item.id, d.name));
    const newest = newestCaptured(manifests, Infinity);
    const newestApp = newestCaptured(manifests.filter((m) => m.consistency === 'app'), Infinity);
    if (newest) latestProcessed.push(itemPoint(newest));
    if (newestApp) latestAppConsistent.push(itemPoint(newestApp));
    all.push(...manifests.map(itemPoint));
  }
  all.sort((a, b) => Date.parse(b.capturedAt) - Date.parse(a.capturedAt) || (a.pointId < b.pointId ? 1 : a.pointId > b.pointId ? -1 : 0));
  return { items: all.slice(0, limit), latestProcessed, latestAppConsistent };
}

function itemPoint(m: PointManifest): ItemPoint {
  return {
    pointId: m.pointId,
    disk: m.disk,
    capturedAt: pointCapturedAt(m),
    consistency: m.consistency,
    sizeBytes: m.diskSizeBytes,
    generation: m.source.generation,
  };
}
