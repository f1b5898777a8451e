import { useMemo } from 'react';
import { useAllPages } from './paged';
import type { Machine, ReplicatedItem } from './types';

export interface ItemNames {
  /** The item's machine name, or undefined while loading or for an unknown id. */
  name(itemId: string): string | undefined;
  readonly items: readonly ReplicatedItem[];
  readonly machines: readonly Machine[];
  readonly error: unknown;
}

/** Replicated items by their machine's name (GET /api/v1/items and /api/v1/machines), refreshed every `refreshMs`. */
export function useItemNames(refreshMs?: number): ItemNames {
  const items = useAllPages<ReplicatedItem>('/api/v1/items', refreshMs);
  const machines = useAllPages<Machine>('/api/v1/machines', refreshMs);
  return useMemo(() => {
    const byMachine = new Map((machines.data ?? []).map((m) => [m.id, m.name]));
    const byItem = new Map((items.data ?? []).map((i) => [i.id, byMachine.get(i.machineId) ?? i.id]));
    return {
      name: (itemId: string) => byItem.get(itemId),
      items: items.data ?? [],
      machines: machines.data ?? [],
      error: items.error ?? machines.error,
    };
  }, [items.data, items.error, machines.data, machines.error]);
}
