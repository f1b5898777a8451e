import type { Job, JobState } from '../../../core/model.js';
import { route } from '../route.js';
import { REQUEST_ID_HEADER } from '../request-id.js';
import type { RouteModule } from '../types.js';
import type { DbJobs } from '../../services/replication-services.js';
import { ENDED_JOB_STATES } from '../../jobs/job-store.js';
import { idString, object, pageOf, pageOrder, pageQuery, timestamp } from './schemas.js';

const JOB_STATES: readonly JobState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const state = { type: 'string', enum: [...JOB_STATES] };
const nullableTime = { type: 'string', nullable: true };
const stepSchema = object({
  name: { type: 'string' },
  state,
  progressPercent: { type: 'integer' },
  startedAt: nullableTime,
  endedAt: nullableTime,
  error: { type: 'string', nullable: true },
});
export const jobSchema = object({
  id: idString,
  kind: { type: 'string' },
  itemId: { ...idString, nullable: true },
  state,
  steps: { type: 'array', items: stepSchema },
  createdAt: timestamp,
  startedAt: nullableTime,
  endedAt: nullableTime,
  error: { type: 'string', nullable: true },
  initiator: { type: 'string' },
});

/** How often the event stream looks at the job; changes by any process reach it through the database. */
export const JOB_EVENTS_POLL_MS = 500;
/**
 * A stream with nothing to say for this long sends a comment line: a step that runs for
 * minutes without progress must not look dead to clients and proxies that give up on a
 * silent body (Node's fetch does after 300 s).
 */
export const JOB_EVENTS_KEEPALIVE_MS = 15_000;

/** Jobs ("Enable protection", ...): list, show, live events, cancel. */
export function jobsRoutes(jobs: DbJobs, options: { eventsPollMs?: number; eventsKeepAliveMs?: number } = {}): RouteModule {
  const pollMs = options.eventsPollMs ?? JOB_EVENTS_POLL_MS;
  const keepAliveMs = options.eventsKeepAliveMs ?? JOB_EVENTS_KEEPALIVE_MS;
  return {
    name: 'jobs',
    register(app) {
      // Open event streams end when the vault stops, or closing would wait for them.
      const streams = new Set<() => void>();
      app.addHook('preClose', async () => {
        for (const end of streams) end();
      });
      route<unknown, { limit: number; after?: string; order?: 'oldest' | 'newest'; state?: JobState; itemId?: string }>(app, {
        id: 'jobs.list',
        method: 'GET',
        url: '/api/v1/jobs',
        permission: 'read',
        summary: 'List jobs (optionally by state or replicated item)',
        tags: ['jobs'],
        schema: {
          querystring: { ...pageQuery, properties: { ...(pageQuery.properties as object), order: pageOrder, state, itemId: idString } },
          response: { 200: pageOf(jobSchema) },
        },
        handler: async (req) =>
          jobs.list(
            { limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}), ...(req.query.order ? { order: req.query.order } : {}) },
            { ...(req.query.state ? { state: req.query.state } : {}), ...(req.query.itemId ? { itemId: req.query.itemId } : {}) },
          ),
      });
      route<{ id: string }>(app, {
        id: 'jobs.show',
        method: 'GET',
        url: '/api/v1/jobs/:id',
        permission: 'read',
        summary: 'Show a job and its steps',
        tags: ['jobs'],
        schema: { params: object({ id: idString }), response: { 200: jobSchema } },
        handler: async (req) => jobs.get(req.params.id),
      });
      route<{ id: string }>(app, {
        id: 'jobs.events',
        method: 'GET',
        url: '/api/v1/jobs/:id/events',
        permission: 'read',
        summary: 'Server-sent events: one `data:` line with the job as JSON on every change; the stream ends when the job ends',
        tags: ['jobs'],
        schema: { params: object({ id: idString }) },
        handler: async (req, _principal, reply) => {
          let job: Job = await jobs.get(req.params.id); // NOT_FOUND as problem+json, before the stream starts
          reply.hijack();
          const res = reply.raw;
          res.writeHead(200, {
            'content-type': 'text/event-stream; charset=utf-8',
            'cache-control': 'no-store',
            connection: 'keep-alive',
            [REQUEST_ID_HEADER]: req.id,
          });
          let closed = false;
          let wake: () => void = () => undefined;
          const end = () => {
            closed = true;
            wake();
          };
          streams.add(end);
          res.on('close', end);
          let last = '';
          let wroteAtMs = Date.now();
          for (;;) {
            const text = JSON.stringify(job);
            if (text !== last) {
              res.write(`id: ${Date.now()}\ndata: ${text}\n\n`);
              last = text;
              wroteAtMs = Date.now();
            } else if (Date.now() - wroteAtMs >= keepAliveMs) {
              res.write(': keep-alive\n\n');
              wroteAtMs = Date.now();
            }
            if (closed || ENDED_JOB_STATES.includes(job.state)) break;
            await new Promise<void>((r) => {
              const t = setTimeout(r, pollMs);
              wake = () => {
                clearTimeout(t);
                r();
              };
            });
            if (closed) break;
            try {
              job = await jobs.get(job.id);
            } catch {
              // The database is going away (vault stopping) or the job was deleted: end the stream.
              break;
            }
          }
          streams.delete(end);
          if (!res.writableEnded) res.end();
          return undefined;
        },
      });
      route<{ id: string }, unknown, Record<string, never>>(app, {
        id: 'jobs.cancel',
        method: 'POST',
        url: '/api/v1/jobs/:id/cancel',
        permission: 'operate',
        summary: 'Cancel a queued or running job (refused for jobs that must never stop half-way, such as failover)',
        tags: ['jobs'],
        schema: { params: object({ id: idString }), body: object({}), response: { 200: jobSchema } },
        handler: async (req) => jobs.cancel(req.params.id),
      });
    },
  };
}
