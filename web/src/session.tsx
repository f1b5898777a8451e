import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { api, setUnauthenticatedHandler, storeToken, storedToken, storedTokenKind } from './api';
import type { Me, Permission, Role, SessionAnswer } from './types';

/** The role table of docs/api.md ("Roles and permissions"): the portal hides what the vault would refuse. */
const ROLE_PERMISSIONS: Record<Role, readonly Permission[]> = {
  owner: ['read', 'configure', 'operate', 'manage-users'],
  contributor: ['read', 'configure', 'operate'],
  operator: ['read', 'operate'],
  reader: ['read'],
};

export interface Session {
  readonly me: Me | null;
  /** True while the stored token is being checked at start. */
  readonly checking: boolean;
  /** A message shown on the sign-in page (the session ended, say). */
  readonly notice: string | null;
  can(permission: Permission): boolean;
  signIn(name: string, password: string): Promise<void>;
  signInWithToken(token: string): Promise<void>;
  signOut(): Promise<void>;
}

const SessionContext = createContext<Session | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [checking, setChecking] = useState(storedToken() !== null);
  const [notice, setNotice] = useState<string | null>(null);

  const load = useCallback(async () => {
    setMe(await api.get<Me>('/api/v1/me'));
  }, []);

  useEffect(() => {
    setUnauthenticatedHandler(() => {
      storeToken(null);
      setMe(null);
      setNotice('Your session has ended. Sign in again.');
    });
    if (storedToken() === null) return;
    load()
      .catch(() => storeToken(null))
      .finally(() => setChecking(false));
  }, [load]);

  const session = useMemo<Session>(
    () => ({
      me,
      checking,
      notice,
      can: (permission) => (me ? ROLE_PERMISSIONS[me.role].includes(permission) : false),
      signIn: async (name, password) => {
        const answer = await api.post<SessionAnswer>('/api/v1/sessions', { name, password });
        storeToken(answer.token, 'session');
        setNotice(null);
        await load();
      },
      signInWithToken: async (token) => {
        storeToken(token);
        try {
          await load();
          setNotice(null);
        } catch (err) {
          storeToken(null);
          throw err;
        }
      },
      signOut: async () => {
        // A session token is revoked on the vault; an API token pasted in is only forgotten here.
        if (storedTokenKind() === 'session') await api.del('/api/v1/sessions/current').catch(() => undefined);
        storeToken(null);
        setMe(null);
      },
    }),
    [me, checking, notice, load],
  );
  return <SessionContext.Provider value={session}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error('useSession outside SessionProvider');
  return session;
}
