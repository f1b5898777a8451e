import type { Command } from 'commander';
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { LifeboatError } from '../../core/errors.js';
import type { ReplicatedItem } from '../../core/model.js';
import type { ApiClient } from '../api-client.js';
import type { Env } from '../context.js';
import { cleanupTestFailover, testFailover } from '../quickstart/drill.js';
import { lockSite, PROTECTED_AT_FIRST_START, readSecret, readState, Site, sitePaths, type SiteState } from '../quickstart/site.js';
import { Supervisor } from '../quickstart/supervisor.js';
import { until } from '../quickstart/wait.js';

interface QuickstartFlags {
  dir: string;
  listen: string;
  compute: string;
  drill: boolean;
  json?: boolean;
}

/** How long the first point (initial replication of the 256 MiB sample disk) and a point after a restart may take. */
const FIRST_POINT_TIMEOUT_MS = 10 * 60_000;
const NEXT_POINT_TIMEOUT_MS = 5 * 60_000;

/** Progress on stderr: one line redrawn in place on a terminal, a plain line per change otherwise. */
function progressLine(out: Env['stderr']): { update(line: string): void; done(): void } {
  let last = '';
  return {
    update(line) {
      if (line === last) return;
      last = line;
      out.write(out.isTTY === true ? `\r${line}\x1b[K` : `${line}\n`);
    },
    done() {
      if (out.isTTY === true && last !== '') out.write('\n');
    },
  };
}

/** Capture time (ms) of the item's newest recovery point, null when it has none. */
async function newestPointMs(api: ApiClient, itemId: string): Promise<number | null> {
  const page = await api.get<{ items: { capturedAt: string }[] }>(`/api/v1/items/${itemId}/points`, { limit: 1 });
  const newest = page.items[0];
  return newest === undefined ? null : Date.parse(newest.capturedAt);
}

export function register(program: Command, env: Env, signals: AbortSignal): void {
  program
    .command('quickstart')
    .description(
      'run Lifeboat on this machine on embedded defaults until interrupted: the vault and its portal, a local-folder store, two sample machines (one protected at once, one left for "Enable replication"); running it again resumes',
    )
    .option('--dir <dir>', 'where the vault, the store, the sample machines and the logs live', 'lifeboat-quickstart')
    .option('--listen <host:port>', 'address of the portal and the REST API (port 0 picks one)', '127.0.0.1:7480')
    .option('--compute <driver>', 'how recovered machines run: qemu, export (disk image files) or auto (qemu when installed)', 'auto')
    .option('--no-drill', 'skip the test failover of the first start')
    .option('--json', 'print one JSON line {"event":"ready",...} once ready, nothing else on stdout')
    .action(async (opts: QuickstartFlags) => {
      const m = /^(.*):(\d+)$/.exec(opts.listen);
      if (!m) throw new LifeboatError('USAGE', '--listen must be HOST:PORT');
      const host = (m[1] as string).replace(/^\[|\]$/g, '');
      const port = Number(m[2]);
      if (!Number.isSafeInteger(port) || port > 65535) throw new LifeboatError('USAGE', '--listen must name a port number (0 picks one)');
      if (opts.compute !== 'qemu' && opts.compute !== 'export' && opts.compute !== 'auto') throw new LifeboatError('USAGE', '--compute must be qemu, export or auto');
      const json = opts.json === true;
      const say = (line: string): void => void (json || env.stdout.write(`${line}\n`));
      const dir = resolve(opts.dir);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const release = lockSite(dir);
      try {
        const first = Site.isNew(dir);
        say(first ? `Starting Lifeboat in ${dir} (first start: creating the vault and the sample machines)` : `Resuming Lifeboat in ${dir}`);
        const site = await Site.start({ dir, host, port, compute: opts.compute });
        let supervisor: Supervisor | undefined;
        try {
          const state = first ? await site.provision() : readState(dir);
          const api = site.ownerApi();
          const password = readSecret(sitePaths(dir).adminPassword);
          supervisor = new Supervisor(site, state, api, site.logger);
          await supervisor.start();
          const ready = await untilReady({ site, state, api, supervisor, first, drill: opts.drill, say, env, signal: signals });
          if (ready === undefined) return; // interrupted before it was ready
          const paths = sitePaths(dir);
          const items = [...(await site.sampleItems(api, state))].map(([machine, item]) => ({ machine, id: item.id, state: item.state }));
          const url = `${site.server.url}/`;
          if (json) {
            env.stdout.write(`${JSON.stringify({ event: 'ready', url, user: 'admin', password, dir, items, computeDriver: site.server.compute.name })}\n`);
          } else {
            say('');
            say(`Portal    ${url}`);
            say(`User      admin`);
            say(`Password  ${password}   (kept in ${paths.adminPassword}; a password changed in the portal replaces it)`);
            say(`Data      ${dir}: vault ${paths.vault}, store ${paths.store}, logs ${paths.log}`);
            if (existsSync(paths.storeRecoveryKey)) say(`Store     recovery key in ${paths.storeRecoveryKey}: keep a copy elsewhere, it opens the store without the vault`);
            say(`Compute   ${site.server.compute.name}`);
            for (const i of items) say(`Machine   ${i.machine}: ${i.state}`);
            if (!items.some((i) => i.machine === 'sample-2')) say('Machine   sample-2: not protected; try "Enable replication" in the portal (install: manual)');
            say('');
            say('Ctrl-C stops; running the same command again resumes.');
          }
          await new Promise<void>((done) => {
            if (signals.aborted) return done();
            signals.addEventListener('abort', () => done(), { once: true });
          });
          say('Stopping...');
        } finally {
          await supervisor?.stop();
          await site.close();
        }
      } finally {
        release();
      }
    });
}

/**
 * Waits for `sample`'s first recovery point (first start: initial replication, its
 * percent shown) and runs the drill, or for a point made after this restart.
 * Resolves undefined when interrupted.
 */
async function untilReady(o: {
  site: Site;
  state: SiteState;
  api: ApiClient;
  supervisor: Supervisor;
  first: boolean;
  drill: boolean;
  say: (line: string) => void;
  env: Env;
  signal: AbortSignal;
}): Promise<true | undefined> {
  const startedMs = Date.now();
  const progress = progressLine(o.env.stderr);
  const sampleItem = async (): Promise<ReplicatedItem> => {
    const item = (await o.site.sampleItems(o.api, o.state)).get(PROTECTED_AT_FIRST_START);
    if (!item) throw new LifeboatError('NOT_FOUND', `the vault has no item for ${PROTECTED_AT_FIRST_START}`);
    return item;
  };
  try {
    if (o.first) {
      const item = await until(
        `${PROTECTED_AT_FIRST_START} to be protected (its first recovery point)`,
        FIRST_POINT_TIMEOUT_MS,
        async () => {
          const agent = o.supervisor.agents.get(PROTECTED_AT_FIRST_START);
          if (agent?.failure !== undefined) throw agent.failure;
          const i = await sampleItem();
          progress.update(`${PROTECTED_AT_FIRST_START}: ${i.state}, initial replication ${i.initialReplicationPercent}%`);
          return i.state === 'protected' ? i : undefined;
        },
        { intervalMs: 500, signal: o.signal },
      );
      progress.done();
      o.say(`${PROTECTED_AT_FIRST_START} is protected: first recovery point made in ${((Date.now() - startedMs) / 1000).toFixed(0)} s`);
      if (o.drill) await drill(o.site, o.api, item.id, o.say);
    } else {
      const item = await sampleItem();
      o.say(`waiting for a new recovery point of ${PROTECTED_AT_FIRST_START}...`);
      await until(
        `a recovery point of ${PROTECTED_AT_FIRST_START} made after the restart`,
        NEXT_POINT_TIMEOUT_MS,
        async () => {
          const newest = await newestPointMs(o.api, item.id);
          return newest !== null && newest >= startedMs ? true : undefined;
        },
        { intervalMs: 500, signal: o.signal },
      );
      o.say(`${PROTECTED_AT_FIRST_START} made a new recovery point`);
    }
    return true;
  } catch (err) {
    progress.done();
    if (o.signal.aborted) return undefined;
    throw err;
  }
}

/** One test failover of `sample` at its newest point, cleaned up at once; the drill report stays in the vault. */
async function drill(site: Site, api: ApiClient, itemId: string, say: (line: string) => void): Promise<void> {
  say(`drill: test failover of ${PROTECTED_AT_FIRST_START} (compute driver ${site.server.compute.name})...`);
  const result = await testFailover(api, site.server.compute, itemId);
  const r = result.report;
  const cleaned = await cleanupTestFailover(api, itemId, r.id, 'quickstart drill');
  if (r.outcome !== 'passed') throw new LifeboatError('DRILL_FAILED', `the quickstart drill ${r.outcome}: ${r.error ?? 'no error recorded'}`);
  const rto = r.rtoSeconds === null ? 'no boot (the driver exports disk files)' : `RTO ${r.rtoSeconds} s`;
  say(`drill: passed (RPO ${r.rpoSeconds ?? '-'} s, ${rto}); test machine removed, drill report ${cleaned.id} kept`);
}
