import type { Page, PageRequest } from './services.js';

/** Pages a list sorted by id (time ids sort by creation). */
export function paginate<T extends { id: string }>(all: Iterable<T>, page: PageRequest): Page<T> {
  const sorted = [...all].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).filter((x) => page.after === undefined || x.id > page.after);
  const items = sorted.slice(0, page.limit);
  return { items, nextCursor: sorted.length > page.limit ? (items[items.length - 1]?.id ?? null) : null };
}
