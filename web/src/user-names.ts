import { useMemo } from 'react';
import { useAllPages } from './paged';
import type { User } from './types';

/** Who started a job, in words: the user's name for a user id (GET /api/v1/users), else the id (a server, say). */
export function useUserNames(): (id: string) => string {
  const users = useAllPages<User>('/api/v1/users');
  return useMemo(() => {
    const byId = new Map((users.data ?? []).map((u) => [u.id, u.name]));
    return (id: string) => byId.get(id) ?? id;
  }, [users.data]);
}
