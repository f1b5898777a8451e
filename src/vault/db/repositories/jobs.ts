import { LifeboatError } from '../../../core/errors.js';
import type { Job, JobKind, JobState, JobStep } from '../../../core/model.js';
import type { Row, SqlParam } from '../database.js';
import type { RepoContext } from './base.js';
import { Table, snake, toParam, type Columns } from './table.js';

type JobRow = Omit<Job, 'steps'>;

const STEP_COLUMNS: Columns<JobStep> = {
  name: 'text',
  state: 'text',
  progressPercent: 'int',
  startedAt: 'text',
  endedAt: 'text',
  error: 'text',
};
const STEP_SELECT = `job_id, position, ${Object.keys(STEP_COLUMNS).map(snake).join(', ')}`;

export type JobPatch = Partial<Pick<Job, 'state' | 'startedAt' | 'endedAt' | 'error'>>;
export type StepPatch = Partial<Omit<JobStep, 'name'>>;

/**
 * Jobs and their ordered steps (job_steps, keyed by job and position). A job is
 * created with all its steps in one transaction; each step is then updated on
 * its own row, so concurrent progress reports on different steps never
 * overwrite each other.
 */
export class JobRepository {
  private readonly jobs: Table<JobRow>;

  constructor(private readonly ctx: RepoContext) {
    this.jobs = new Table<JobRow>(ctx.db, {
      table: 'jobs',
      noun: 'job',
      columns: {
        id: 'text',
        kind: 'text',
        itemId: 'text',
        state: 'text',
        createdAt: 'text',
        startedAt: 'text',
        endedAt: 'text',
        error: 'text',
        initiator: 'text',
      },
    });
  }

  /** A queued job whose steps (in the given order) are queued at 0 %. NOT_FOUND for an unknown item. */
  async create(input: { kind: JobKind; itemId: string | null; initiator: string; steps: readonly string[] }): Promise<Job> {
    if (input.steps.length === 0) throw new LifeboatError('INTERNAL', 'a job needs at least one step');
    const job: JobRow = {
      id: this.ctx.newId(),
      kind: input.kind,
      itemId: input.itemId,
      state: 'queued',
      createdAt: this.ctx.now().toISOString(),
      startedAt: null,
      endedAt: null,
      error: null,
      initiator: input.initiator,
    };
    const steps: JobStep[] = input.steps.map((name) => ({ name, state: 'queued', progressPercent: 0, startedAt: null, endedAt: null, error: null }));
    await this.ctx.db.transaction(async (tx) => {
      await this.jobs.insert(job);
      for (const [position, step] of steps.entries()) {
        await tx.run('INSERT INTO job_steps (job_id, position, name, state, progress_percent) VALUES (?, ?, ?, ?, ?)', [
          job.id,
          position,
          step.name,
          step.state,
          step.progressPercent,
        ]);
      }
    });
    return { ...job, steps };
  }

  async find(id: string): Promise<Job | undefined> {
    const job = await this.jobs.find(id);
    if (!job) return undefined;
    return (await this.withSteps([job]))[0];
  }

  async get(id: string): Promise<Job> {
    const job = await this.find(id);
    if (!job) throw this.jobs.notFound(id);
    return job;
  }

  /** Oldest first; `limit` keeps the first N. */
  async list(filter: { state?: JobState; itemId?: string; kind?: JobKind; limit?: number } = {}): Promise<Job[]> {
    const { limit, ...where } = filter;
    return this.withSteps(await this.jobs.list(where, limit === undefined ? {} : { limit }));
  }

  /** NOT_FOUND for an unknown job. */
  async update(id: string, patch: JobPatch): Promise<Job> {
    await this.jobs.update(id, patch);
    return this.get(id);
  }

  /** Sets the job's state to `to` only if it is `from` (e.g. claim a queued job); false otherwise. */
  async updateState(id: string, from: JobState, to: JobState, patch: Omit<JobPatch, 'state'> = {}): Promise<boolean> {
    const changed = await this.jobs.updateWhere(id, { ...patch, state: to }, { sql: 'state = ?', params: [from] });
    if (!changed && !(await this.jobs.find(id))) throw this.jobs.notFound(id);
    return changed;
  }

  /** Updates step `position` (0-based) of job `id`; NOT_FOUND when the job or step does not exist. */
  async updateStep(id: string, position: number, patch: StepPatch): Promise<void> {
    const entries = Object.entries(patch).filter(([f, v]) => v !== undefined && f in STEP_COLUMNS && f !== 'name');
    if (entries.length === 0) return;
    const params: SqlParam[] = entries.map(([f, v]) => toParam(STEP_COLUMNS[f as keyof JobStep], v));
    const result = await this.ctx.db.run(
      `UPDATE job_steps SET ${entries.map(([f]) => `${snake(f)} = ?`).join(', ')} WHERE job_id = ? AND position = ?`,
      [...params, id, position],
    );
    if (result.changes === 0) {
      throw new LifeboatError('NOT_FOUND', `job ${id} has no step ${position}`, { details: { job: id, step: position } });
    }
  }

  /** Deletes a job and its steps; NOT_FOUND for an unknown job. */
  delete(id: string): Promise<void> {
    return this.jobs.delete(id);
  }

  private async withSteps(jobs: JobRow[]): Promise<Job[]> {
    if (jobs.length === 0) return [];
    const byJob = new Map<string, JobStep[]>(jobs.map((j) => [j.id, []]));
    // Chunked so that no statement has more parameters than SQLite allows.
    for (let i = 0; i < jobs.length; i += 500) {
      const ids = jobs.slice(i, i + 500).map((j) => j.id);
      const rows = await this.ctx.db.query<Row>(
        `SELECT ${STEP_SELECT} FROM job_steps WHERE job_id IN (${ids.map(() => '?').join(', ')}) ORDER BY job_id, position`,
        ids,
      );
      for (const r of rows) {
        byJob.get(r.job_id as string)?.push({
          name: r.name as string,
          state: r.state as JobState,
          progressPercent: Number(r.progress_percent),
          startedAt: (r.started_at as string | null) ?? null,
          endedAt: (r.ended_at as string | null) ?? null,
          error: (r.error as string | null) ?? null,
        });
      }
    }
    return jobs.map((j) => ({ ...j, steps: byJob.get(j.id) ?? [] }));
  }
}
