import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { openDatabase } from './db/open.js';
import { createRepositories, type Repositories } from './db/repositories/index.js';
import { buildApi } from './http/server.js';
import { policiesRoutes } from './http/routes/policies.js';
import { tokensRoutes } from './http/routes/tokens.js';
import { usersRoutes } from './http/routes/users.js';
import { vaultsRoutes } from './http/routes/vaults.js';
import type { Principal } from './http/types.js';
import { DbPolicies, DbTokens, DbUsers, DbVaults } from './services/db-services.js';

export interface VaultServerOptions {
  /** Holds the SQLite database (and, later, keys and spools). Created 0700 if missing. */
  readonly dataDir: string;
  /** `sqlite:///…` or `postgres://…`; default a SQLite file in dataDir. */
  readonly databaseUrl?: string;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly now?: () => Date;
}

export interface VaultServer {
  readonly url: string;
  /** The first owner's API token, only on the start that created it (it is never stored in clear). */
  readonly initialAdminToken: string | undefined;
  readonly repos: Repositories;
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

/**
 * The vault: its database, its services and its REST API, all in one process
 * on embedded defaults. The first start creates an owner named `admin` and
 * returns its token once.
 */
export async function startVaultServer(options: VaultServerOptions): Promise<VaultServer> {
  const now = options.now ?? (() => new Date());
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const db = await openDatabase(options.databaseUrl ?? `sqlite://${join(options.dataDir, 'vault.db')}`, { now });
  try {
    const repos = createRepositories(db, { now });
    const users = new DbUsers(repos);
    const tokens = new DbTokens(repos, now);
    let initialAdminToken: string | undefined;
    if ((await repos.users.list()).length === 0) {
      const admin = await repos.users.create({ name: 'admin', role: 'owner' });
      initialAdminToken = (await tokens.create({ userId: admin.id, name: 'initial admin token', expiresAt: null })).secret;
    }
    const app = await buildApi({
      now,
      authenticate: async (bearer): Promise<Principal | undefined> => {
        const found = await tokens.verify(bearer);
        return found && { kind: 'token', id: found.token.id, role: found.user.role, userId: found.user.id };
      },
      audit: async (entry) => {
        await repos.auditLog.append(entry);
      },
      ready: () => true,
      routes: [usersRoutes(users), tokensRoutes(tokens, now), vaultsRoutes(new DbVaults(repos)), policiesRoutes(new DbPolicies(repos))],
    });
    await app.listen({ host: options.host, port: options.port });
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : options.port;
    const host = options.host.includes(':') ? `[${options.host}]` : options.host;
    return {
      url: `http://${host}:${port}`,
      initialAdminToken,
      repos,
      app,
      close: async () => {
        await app.close();
        await db.close();
      },
    };
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
}
