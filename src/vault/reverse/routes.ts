import { LifeboatError } from '../../core/errors.js';
import { transition } from '../../core/item-state.js';
import { JOB_KINDS } from '../../core/jobs.js';
import type { Job, JobKind } from '../../core/model.js';
import { route } from '../http/route.js';
import { jobSchema } from '../http/routes/jobs.js';
import { idString, object } from '../http/routes/schemas.js';
import type { Principal, RouteModule } from '../http/types.js';
import { ENDED_JOB_STATES } from '../jobs/job-store.js';
import type { RecoveryDeps } from '../recovery/module.js';
import type { ReverseEngine, ReverseState } from './engine.js';

/**
 * Reprotect and failback for operators (202 with the job), the reverse status the CLI
 * prints, and the agent's side of reverse replication (its own credential only):
 * digests, the next batch of blocks, acknowledgements (docs/replication.md, "Reverse
 * replication").
 */

/** Bytes of blocks a batch carries at most (the agent may ask for less). */
export const MAX_BATCH_BYTES = 8 * 2 ** 20;

const params = object({ id: idString });
const initiator = (p: Principal): string => p.userId ?? p.id;
const count = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER };
const session = { type: 'string', minLength: 1, maxLength: 64 };

export const reverseStatusSchema = object({
  itemId: idString,
  session: { type: 'string', nullable: true },
  active: { type: 'boolean' },
  bytesShipped: count,
  blocksShipped: count,
  queuedBlocks: count,
  ackedSequence: count,
  jobs: { type: 'object', additionalProperties: object({ bytes: count, blocks: count }) },
});

export interface ReverseStatus {
  readonly itemId: string;
  readonly session: string | null;
  readonly active: boolean;
  readonly bytesShipped: number;
  readonly blocksShipped: number;
  readonly queuedBlocks: number;
  readonly ackedSequence: number;
  readonly jobs: ReverseState['jobs'];
}

export function reverseStatus(itemId: string, s: ReverseState | undefined): ReverseStatus {
  return {
    itemId,
    session: s?.session ?? null,
    active: s !== undefined && !s.ended,
    bytesShipped: s?.bytesShipped ?? 0,
    blocksShipped: s?.blocksShipped ?? 0,
    queuedBlocks: s?.queue.reduce((n, e) => n + e.count, 0) ?? 0,
    ackedSequence: s?.acked ?? 0,
    jobs: s?.jobs ?? {},
  };
}

export function reverseRoutes(deps: RecoveryDeps, engine: ReverseEngine): RouteModule {
  const { repos } = deps;

  /**
   * The item's state changes and its job is created in one transaction (src/core/item-state.ts).
   * A reprotect or failback whose job failed is run again (a new job, the same state and
   * generation), never undone, as a failover is: the first steps fenced the other side already.
   */
  const start = async (itemId: string, action: 'start-reprotect' | 'start-failback', who: string): Promise<Job> => {
    const item = await repos.items.get(itemId);
    const kind: JobKind = action === 'start-reprotect' ? 'reprotect' : 'failback';
    if (item.state === (action === 'start-reprotect' ? 'reprotecting' : 'failing-back')) {
      return repos.db.transaction(async () => {
        const open = (await repos.jobs.list({ itemId: item.id, kind })).filter((j) => !ENDED_JOB_STATES.includes(j.state));
        if (open.length > 0) {
          throw new LifeboatError('ILLEGAL_TRANSITION', `a ${kind} of item ${item.id} is still ${open[0]?.state} (job ${open[0]?.id}); wait for it`, {
            details: { item: item.id, job: open[0]?.id },
          });
        }
        return repos.jobs.create({ kind, itemId: item.id, initiator: who, steps: JOB_KINDS[kind].steps.map((s) => s.name) });
      });
    }
    const next = transition(item, action);
    return repos.db.transaction(async () => {
      if (!(await repos.items.updateState(item.id, item.state, next.state, { generation: next.generation }))) {
        throw new LifeboatError('CONFLICT', `item ${item.id} changed state while ${action} was starting; try again`, { details: { item: item.id, action } });
      }
      let job: Job | undefined;
      for (const kind of next.jobs as readonly JobKind[]) job = await repos.jobs.create({ kind, itemId: item.id, initiator: who, steps: JOB_KINDS[kind].steps.map((s) => s.name) });
      if (!job) throw new LifeboatError('INTERNAL', `${action} started no job`);
      return job;
    });
  };

  const agentItem = async (p: Principal): Promise<string> => (await repos.agents.get(p.id)).itemId;

  return {
    name: 'reverse',
    register(app) {
      route<{ id: string }, unknown, Record<string, never>>(app, {
        id: 'items.reprotect',
        method: 'POST',
        url: '/api/v1/items/:id/reprotect',
        permission: 'operate',
        summary: "Reprotect a committed item: its primary machine's agent becomes the target of reverse replication from the replica",
        tags: ['recovery'],
        successStatus: 202,
        schema: { params, body: object({}), response: { 202: jobSchema } },
        handler: async (req, p) => start(req.params.id, 'start-reprotect', initiator(p)),
      });
      route<{ id: string }, unknown, Record<string, never>>(app, {
        id: 'items.failback',
        method: 'POST',
        url: '/api/v1/items/:id/failback',
        permission: 'operate',
        summary: 'Fail a reprotected item back: last changes to the primary machine, replica written as the newest point, replication in the original direction',
        tags: ['recovery'],
        successStatus: 202,
        schema: { params, body: object({}), response: { 202: jobSchema } },
        handler: async (req, p) => start(req.params.id, 'start-failback', initiator(p)),
      });
      route<{ id: string }>(app, {
        id: 'items.reverse',
        method: 'GET',
        url: '/api/v1/items/:id/reverse',
        permission: 'read',
        summary: "An item's reverse replication: session, bytes and blocks the primary machine's agent wrote (in all and per job), blocks still queued",
        tags: ['recovery'],
        schema: { params, response: { 200: reverseStatusSchema } },
        handler: async (req) => {
          await repos.items.get(req.params.id);
          return reverseStatus(req.params.id, await engine.state(req.params.id));
        },
      });

      route<unknown, unknown, { session: string; request: string; disk: string; sizeBytes: number; firstBlock: number; digests: string; last: boolean }>(app, {
        id: 'agents.reverse-digests',
        method: 'POST',
        url: '/api/v1/agents/self/reverse/digests',
        permission: 'read',
        caller: 'agent',
        summary: "Part of the agent's digests of one disk (SHA-256 per 64 KiB block, base64), as the vault asked in AgentConfig.reverse",
        tags: ['agents'],
        successStatus: 204,
        schema: {
          body: object({
            session,
            request: session,
            disk: { type: 'string', minLength: 1, maxLength: 63 },
            sizeBytes: count,
            firstBlock: count,
            // 8192 digests of 32 bytes, in base64.
            digests: { type: 'string', maxLength: 350_000 },
            last: { type: 'boolean' },
          }),
        },
        handler: async (req, p) => {
          await engine.receiveDigests(await agentItem(p), { ...req.body, digests: Buffer.from(req.body.digests, 'base64') });
          return undefined;
        },
      });
      route<unknown, unknown, { session: string; maxBytes: number }>(app, {
        id: 'agents.reverse-batch',
        method: 'POST',
        url: '/api/v1/agents/self/reverse/batch',
        permission: 'read',
        caller: 'agent',
        summary: 'The next blocks for the agent to write, in sequence order (base64; at most maxBytes, and at least one entry when any is queued)',
        tags: ['agents'],
        schema: {
          body: object({ session, maxBytes: { type: 'integer', minimum: 65536, maximum: MAX_BATCH_BYTES } }),
          response: {
            200: object({
              session: { type: 'string' },
              blocks: { type: 'array', items: object({ sequence: count, disk: { type: 'string' }, offset: count, data: { type: 'string' } }) },
            }),
          },
        },
        handler: async (req, p) => {
          const batch = await engine.batch(await agentItem(p), req.body.session, req.body.maxBytes);
          return { session: batch.session, blocks: batch.blocks.map((b) => ({ ...b, data: b.data.toString('base64') })) };
        },
      });
      route<unknown, unknown, { session: string; sequence: number; bytes: number }>(app, {
        id: 'agents.reverse-ack',
        method: 'POST',
        url: '/api/v1/agents/self/reverse/ack',
        permission: 'read',
        caller: 'agent',
        summary: 'The agent wrote and fsynced every block up to this sequence',
        tags: ['agents'],
        successStatus: 204,
        schema: { body: object({ session, sequence: count, bytes: count }) },
        handler: async (req, p) => {
          await engine.ack(await agentItem(p), req.body.session, req.body.sequence);
          return undefined;
        },
      });
    },
  };
}
