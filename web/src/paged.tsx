import { useCallback, useEffect, useState } from 'react';
import { api } from './api';
import type { Resource } from './components';
import type { Page } from './types';

/** Every item of a paged list route (docs/api.md, "Pagination"), following `nextCursor` to the end. */
export async function fetchAll<T>(path: string, signal?: AbortSignal): Promise<T[]> {
  const out: T[] = [];
  const sep = path.includes('?') ? '&' : '?';
  let after: string | null = null;
  do {
    const page: Page<T> = await api.get<Page<T>>(`${path}${sep}limit=500${after ? `&after=${encodeURIComponent(after)}` : ''}`, signal);
    out.push(...page.items);
    after = page.nextCursor;
  } while (after !== null);
  return out;
}

/**
 * Like useResource, for a whole paged list: every page, again every `refreshMs` when
 * given; keeps the last data while reloading. `updatedAt` is when the last load ended.
 */
export function useAllPages<T>(path: string | null, refreshMs?: number): Resource<readonly T[]> & { updatedAt: Date | null } {
  const [data, setData] = useState<readonly T[] | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(path !== null);
  const [updatedAt, setUpdatedAt] = useState<Date | null>(null);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    if (path === null) return;
    const abort = new AbortController();
    setLoading(true);
    fetchAll<T>(path, abort.signal)
      .then((d) => {
        setData(d);
        setError(null);
        setUpdatedAt(new Date());
      })
      .catch((err: unknown) => {
        if (!abort.signal.aborted) setError(err);
      })
      .finally(() => {
        if (!abort.signal.aborted) setLoading(false);
      });
    return () => abort.abort();
  }, [path, tick]);
  useEffect(() => {
    if (!refreshMs || path === null) return;
    const t = setInterval(reload, refreshMs);
    return () => clearInterval(t);
  }, [refreshMs, path, reload]);
  return { data, error, loading, reload, updatedAt };
}

/** Newest first by an ISO time field. */
export function newestFirst<T>(items: readonly T[], time: (x: T) => string): T[] {
  return [...items].sort((a, b) => (time(a) < time(b) ? 1 : time(a) > time(b) ? -1 : 0));
}
