import { api } from './api';
import { useLoaded, type Resource } from './components';
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

/** Like useResource, for a whole paged list: every page, again every `refreshMs` when given. */
export function useAllPages<T>(path: string | null, refreshMs?: number): Resource<readonly T[]> {
  return useLoaded<readonly T[]>(path, (signal) => fetchAll<T>(path as string, signal), refreshMs);
}

/** The newest `count` items of a list route that takes `order=newest` (jobs, alerts): one request. */
export function useNewest<T>(path: string, count: number, refreshMs?: number): Resource<readonly T[]> {
  const url = `${path}${path.includes('?') ? '&' : '?'}order=newest&limit=${count}`;
  return useLoaded<readonly T[]>(url, async (signal) => (await api.get<Page<T>>(url, signal)).items, refreshMs);
}

/** Newest first by an ISO time field. */
export function newestFirst<T>(items: readonly T[], time: (x: T) => string): T[] {
  return [...items].sort((a, b) => (time(a) < time(b) ? 1 : time(a) > time(b) ? -1 : 0));
}
