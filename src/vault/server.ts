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
import { configServersRoutes } from './http/routes/config-servers.js';
import { registrationKeysRoutes } from './http/routes/registration-keys.js';
import { vaultCheckRoutes } from './http/routes/vault-check.js';
import { processServersRoutes } from './http/routes/process-servers.js';
import { StandaloneProcessServers } from './services/process-servers.js';
import { RegistrationService } from './services/registration.js';
import { VaultChecks } from './services/vault-check.js';
import type { Principal } from './http/types.js';
import { DbItemPoints, DbPolicies, DbSessions, DbTokens, DbUsers, DbVaults } from './services/db-services.js';
import { sessionsRoutes } from './http/routes/sessions.js';
import { pointsRoutes } from './http/routes/points.js';
import { RpoSampler } from './services/rpo-history.js';
import { SignInAttempts, type PasswordCost } from './services/passwords.js';
import { accountsRoutes, machinesRoutes } from './http/routes/machines.js';
import { alertsRoutes } from './http/routes/alerts.js';
import { jobsRoutes } from './http/routes/jobs.js';
import { replicationRoutes } from './http/routes/replication.js';
import { JobRunner, defaultStepHandlers, type StepHandlers } from './jobs/runner.js';
import { PushMobilityInstaller, type PushInstallSettings } from './jobs/push-installer.js';
import { AlertEvaluator } from './services/alert-evaluator.js';
import { DbAccounts, DbAlerts, DbJobs, DbMachines, DbReplication } from './services/replication-services.js';
import { SecretBox, loadOrCreateVaultKey } from './secrets/secret-box.js';
import { registerSecret } from './secrets/redact.js';
import { createVaultLogger, type VaultLogger } from './logging/logger.js';
import { VaultCa, type ProcessServerTls } from './pki/ca.js';
import { agentsRoutes } from './http/routes/agents.js';
import { AgentService, type ProcessServerEndpoint } from './services/agents.js';
import { VaultStores } from './services/vault-stores.js';
import { BuiltInProcessServerReporter, VaultProcessServerBackend, type ProcessServerFigures } from './services/built-in-process-server.js';
import { ReplicaProcessor, finalizeProtectionHandlers } from './replica/processor.js';
import { packageRoot, packageVersion } from './jobs/agent-bundle.js';
import type { ComputeDriver } from '../compute/driver.js';
import { createComputeDriver } from '../compute/index.js';
import { recoveryModule } from './recovery/index.js';
import { plansModule } from './plans/index.js';
import { reverseModule } from './reverse/index.js';
import type { RecoveryDeps, RecoveryOperations } from './recovery/module.js';

/** How often buffered heartbeats are written (RegistrationService.flushHeartbeats). */
const HEARTBEAT_FLUSH_MS = 1000;
/** Alerts are evaluated this often by default: RPOs are seconds. */
const ALERT_INTERVAL_MS = 5000;
/** Items' RPO is sampled for the portal's chart this often by default. */
const RPO_SAMPLE_INTERVAL_MS = 60_000;
/** Agents reach the built-in process server here unless told otherwise (docs/replication.md). */
export const DEFAULT_PROCESS_SERVER_PORT = 9443;

export interface VaultServerOptions {
  /** Holds the SQLite database, the vault key and the CA (`pki/`). Created 0700 if missing. */
  readonly dataDir: string;
  /** `sqlite:///…` or `postgres://…`; default a SQLite file in dataDir. */
  readonly databaseUrl?: string;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly now?: () => Date;
  /** Job step handlers (default: src/vault/jobs/runner.ts defaultStepHandlers) and queue poll interval. */
  readonly jobs?: { readonly handlers?: StepHandlers; readonly pollIntervalMs?: number; readonly eventsPollMs?: number; readonly eventsKeepAliveMs?: number };
  /** Alert evaluation interval; default 5 s. */
  readonly alertIntervalMs?: number;
  /** The replica processor (src/vault/replica): its pass interval (default 1 s), or off (tests that drive processNow). */
  readonly replica?: { readonly tickMs?: number; readonly enabled?: boolean };
  /** scrypt cost of the stores the vault creates (tests lower it). */
  readonly storeScrypt?: { N: number; r: number; p: number };
  /** Where agents reach the process server (default: the API's host, port 9443); setProcessServerEndpoint changes it. */
  readonly processServer?: ProcessServerEndpoint;
  /**
   * Given, "Install the mobility service" push-installs over SSH with these settings
   * (src/vault/jobs/push-installer.ts; `lifeboat server` always gives it); absent, the
   * step fails saying push install is pending. Ignored when `jobs.handlers` is given.
   */
  readonly pushInstall?: PushInstallSettings;
  /** Default: src/vault/logging/logger.ts createVaultLogger() (JSON lines to stderr, level from LIFEBOAT_LOG_LEVEL). */
  readonly logger?: VaultLogger;
  /** Boots (or exports) recovered machines; default createComputeDriver('auto') with its state in `<dataDir>/compute`. */
  readonly compute?: ComputeDriver;
  /** Recovery plans: how often due drills are looked for (default 30 s); `operations` replaces src/vault/recovery's item operations (tests). */
  readonly plans?: { readonly drillIntervalMs?: number; readonly operations?: (deps: RecoveryDeps) => RecoveryOperations };
  /** The built portal served at `/`; default `dist/web` of the package. */
  readonly portalDir?: string;
  /** How often each item's RPO is sampled for its history (src/vault/services/rpo-history.ts); default 60 s. */
  readonly rpoSampleIntervalMs?: number;
  /** scrypt cost of new password hashes (src/vault/services/passwords.ts; tests lower it). */
  readonly passwordScrypt?: PasswordCost;
}

export interface VaultServer {
  readonly url: string;
  /** The first owner's API token, only on the start that created it (it is never stored in clear). */
  readonly initialAdminToken: string | undefined;
  readonly repos: Repositories;
  readonly app: FastifyInstance;
  /** The vault's stores (openVaultStore). */
  readonly stores: VaultStores;
  readonly agents: AgentService;
  /** The backend of a process server running in this process (src/process-server's ProcessServerBackend, structurally). */
  readonly processServerBackend: VaultProcessServerBackend;
  readonly replica: ReplicaProcessor;
  readonly compute: ComputeDriver;
  /** A fresh key and certificate for the process server, with `sans` as its addresses, and the CA agents trust. */
  processServerTls(sans: readonly string[]): Promise<ProcessServerTls>;
  /** Where agents reach the process server from now on (enrollment answers and AgentConfig). */
  setProcessServerEndpoint(endpoint: ProcessServerEndpoint): void;
  /** Records the built-in process server's figures (database rows, /metrics); `address` is host:port. */
  reportProcessServer(figures: ProcessServerFigures, address: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * The vault: its database, its services and its REST API, all in one process
 * on embedded defaults. The first start creates an owner named `admin` and
 * returns its token once.
 */
export async function startVaultServer(options: VaultServerOptions): Promise<VaultServer> {
  const now = options.now ?? (() => new Date());
  const logger = options.logger ?? createVaultLogger();
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const db = await openDatabase(options.databaseUrl ?? `sqlite://${join(options.dataDir, 'vault.db')}`, { now });
  try {
    const repos = createRepositories(db, { now });
    const users = new DbUsers(repos);
    const tokens = new DbTokens(repos, now);
    const sessions = new DbSessions(repos, tokens, now, new SignInAttempts(now), options.passwordScrypt);
    const rpoSampler = new RpoSampler({
      repos,
      now,
      intervalMs: options.rpoSampleIntervalMs ?? RPO_SAMPLE_INTERVAL_MS,
      onError: (err) => logger.error({ err }, 'RPO sampling failed'),
    });
    let initialAdminToken: string | undefined;
    if ((await repos.users.list()).length === 0) {
      const admin = await repos.users.create({ name: 'admin', role: 'owner' });
      initialAdminToken = (await tokens.create({ userId: admin.id, name: 'initial admin token', expiresAt: null })).secret;
      registerSecret(initialAdminToken);
    }
    // Push-account secrets are sealed with the vault key (a file next to the database, 0600).
    const secretBox = new SecretBox(await loadOrCreateVaultKey(join(options.dataDir, 'vault.key')));
    const registration = new RegistrationService(repos, secretBox, now);
    const ca = await VaultCa.loadOrCreate(join(options.dataDir, 'pki'), secretBox, now);
    const stores = new VaultStores(repos, secretBox, options.storeScrypt ? { scrypt: options.storeScrypt } : {});
    const defaultHost = options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host;
    let endpoint: ProcessServerEndpoint = options.processServer ?? { host: defaultHost, port: DEFAULT_PROCESS_SERVER_PORT, serverName: defaultHost };
    // An item whose processServerId names a standalone process server is told that server's endpoint.
    const agents = new AgentService(repos, async () => ca, now, () => endpoint, (id): Promise<ProcessServerEndpoint | undefined> => standalone.endpointOf(id));
    const standalone = new StandaloneProcessServers(repos, async () => ca, agents, now);
    const backend = new VaultProcessServerBackend(agents, stores);
    const reporter = new BuiltInProcessServerReporter(repos, now, await packageVersion(await packageRoot()).catch(() => '0.0.0'));
    const replica = new ReplicaProcessor({
      repos,
      stores,
      now,
      logger,
      ...(options.replica?.tickMs === undefined ? {} : { tickMs: options.replica.tickMs }),
    });
    const compute = options.compute ?? (await createComputeDriver('auto', { stateDir: join(options.dataDir, 'compute') }));
    const recoveryDeps: RecoveryDeps = { repos, stores, replica, agents, compute, now, logger, dataDir: options.dataDir };
    const recovery = recoveryModule(recoveryDeps);
    const plans = plansModule(
      { ...recoveryDeps, operations: options.plans?.operations?.(recoveryDeps) ?? recovery.operations },
      options.plans?.drillIntervalMs === undefined ? {} : { drillIntervalMs: options.plans.drillIntervalMs },
    );
    const reverse = reverseModule(recoveryDeps);
    const modules = [recovery, plans, reverse];
    // Routes authenticated by a credential in the body (registration, enrollment) record their own audit entries.
    const audit = async (entry: Parameters<typeof repos.auditLog.append>[0]): Promise<void> => void (await repos.auditLog.append(entry));
    const app = await buildApi({
      now,
      logger,
      authenticate: async (bearer): Promise<Principal | undefined> => {
        // Tokens and server credentials are masked by their shape (redact.ts): registering each one
        // would make every log line scan thousands of values.
        const found = await tokens.verify(bearer);
        if (found) return { kind: 'token', id: found.token.id, role: found.user.role, userId: found.user.id };
        // A configuration server's credential opens `caller: 'server'` routes only (route.ts), with the least role.
        const server = await registration.authenticateServer(bearer);
        if (server) return { kind: 'server', id: server.id, role: 'reader' };
        // An agent's credential opens `caller: 'agent'` routes only.
        const agent = await agents.authenticate(bearer);
        return agent && { kind: 'agent', id: agent.id, role: 'reader' };
      },
      audit: async (entry) => {
        await repos.auditLog.append(entry);
      },
      ready: () => true,
      extraMetrics: () => reporter.metrics(),
      portalDir: options.portalDir ?? join(await packageRoot(), 'dist', 'web'),
      routes: [
        usersRoutes(users),
        tokensRoutes(tokens, now),
        vaultsRoutes(new DbVaults(repos, stores)),
        policiesRoutes(new DbPolicies(repos)),
        machinesRoutes(new DbMachines(repos)),
        accountsRoutes(new DbAccounts(repos, secretBox)),
        replicationRoutes(new DbReplication(repos, now)),
        jobsRoutes(new DbJobs(repos, now), {
          ...(options.jobs?.eventsPollMs === undefined ? {} : { eventsPollMs: options.jobs.eventsPollMs }),
          ...(options.jobs?.eventsKeepAliveMs === undefined ? {} : { eventsKeepAliveMs: options.jobs.eventsKeepAliveMs }),
        }),
        alertsRoutes(new DbAlerts(repos)),
        registrationKeysRoutes(registration),
        configServersRoutes(registration, audit, now),
        vaultCheckRoutes(new VaultChecks(repos, now)),
        agentsRoutes(agents, audit, now),
        processServersRoutes(standalone, audit, now),
        sessionsRoutes(sessions, audit, now),
        pointsRoutes(new DbItemPoints(repos, stores), rpoSampler),
        ...modules.flatMap((m) => m.routes),
      ],
    });
    // The URL written into agent.env; with port 0 it is known only once the API listens.
    let listenUrl = options.port === 0 ? undefined : `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${options.port}`;
    const installer =
      options.pushInstall &&
      new PushMobilityInstaller({
        repos,
        accounts: new DbAccounts(repos, secretBox),
        now,
        vaultUrl: () => listenUrl,
        settings: options.pushInstall,
        enrollmentToken: async (itemId) => (await agents.createEnrollmentToken(itemId)).token,
      });
    const finalize = finalizeProtectionHandlers(stores);
    // Jobs left running by the previous process are resumed or failed before the API answers.
    const runner = new JobRunner({
      repos,
      now,
      onError: (err) => logger.error({ err }, 'job runner failed'),
      handlers: options.jobs?.handlers ?? {
        ...defaultStepHandlers(installer),
        'finalize-protection': finalize,
        ...recovery.handlers,
        ...plans.handlers,
        ...reverse.handlers,
      },
      ...(options.jobs?.pollIntervalMs ? { pollIntervalMs: options.jobs.pollIntervalMs } : {}),
    });
    // Modules first: recovered machines are served their sources again before a resumed job needs them.
    for (const m of modules) await m.start();
    await runner.start();
    const alerts = new AlertEvaluator({
      repos,
      now,
      onError: (err) => logger.error({ err }, 'alert evaluation failed'),
      intervalMs: options.alertIntervalMs ?? ALERT_INTERVAL_MS,
      journalGaps: () => replica.journalGaps(),
    });
    alerts.start();
    rpoSampler.start();
    if (options.replica?.enabled !== false) replica.start();
    try {
      await app.listen({ host: options.host, port: options.port });
    } catch (err) {
      await Promise.all([runner.stop(), alerts.stop(), rpoSampler.stop(), replica.stop(), ...modules.map((m) => m.stop())]);
      throw err;
    }
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : options.port;
    const host = options.host.includes(':') ? `[${options.host}]` : options.host;
    listenUrl = `http://${host}:${port}`;
    // Buffered heartbeats (soft state) are written together once a second.
    const heartbeatFlush = setInterval(() => {
      registration.flushHeartbeats().catch((err: unknown) => logger.error({ err }, 'heartbeat flush failed'));
    }, HEARTBEAT_FLUSH_MS);
    heartbeatFlush.unref();
    return {
      url: `http://${host}:${port}`,
      initialAdminToken,
      repos,
      app,
      stores,
      agents,
      processServerBackend: backend,
      replica,
      compute,
      processServerTls: (sans) => ca.issueProcessServerCertificate(sans),
      setProcessServerEndpoint: (next) => {
        endpoint = next;
      },
      reportProcessServer: (figures, address) => reporter.report(figures, address),
      close: async () => {
        clearInterval(heartbeatFlush);
        await Promise.all([runner.stop(), alerts.stop(), rpoSampler.stop(), replica.stop(), ...modules.map((m) => m.stop())]);
        await app.close();
        await registration.flushHeartbeats();
        await db.close();
      },
    };
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
}
