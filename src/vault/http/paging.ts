import type { Page, PageRequest } from './services.js';

/** Pages a list sorted by id (time ids sort by creation), oldest first unless `order` is `newest`. */
export function paginate<T extends { id: string }>(all: Iterable<T>, page: PageRequest): Page<T> {
  const sign = page.order === 'newest' ? -1 : 1;
  const sorted = [...all]
    .sort((a, b) => sign * (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .filter((x) => page.after === undefined || sign * (x.id < page.after ? -1 : x.id > page.after ? 1 : 0) > 0);
  const items = sorted.slice(0, page.limit);
  return { items, nextCursor: sorted.length > page.limit ? (items[items.length - 1]?.id ?? null) : null };
}
