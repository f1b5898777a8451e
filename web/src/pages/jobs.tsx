import { useState } from 'react';
import { Badge, ErrorMessage, Field, Loaded, PageHeader, ProgressBar, formatDuration, formatTime, useResource } from '../components';
import { useItemNames, type ItemNames } from '../item-names';
import { JOB_STATES, currentStep, jobKindWords, jobPercent, jobSeconds } from '../job-words';
import { Link } from '../router';
import type { Job, JobState, Page } from '../types';
import { useUserNames } from '../user-names';
import '../filters.css';

const REFRESH_MS = 3000;
/** The list shows this many of the newest jobs (one request, however long the history). */
const SHOWN = 200;

/** The newest jobs first, refreshed every 3 s; filter by state. */
export function Jobs() {
  const [state, setState] = useState<JobState | ''>('');
  const jobs = useResource<Page<Job>>(`/api/v1/jobs?order=newest&limit=${SHOWN}${state ? `&state=${state}` : ''}`, REFRESH_MS);
  const names = useItemNames(REFRESH_MS * 5);
  return (
    <>
      <PageHeader title="Jobs" />
      <div className="panel filters">
        <Field label="State">
          {(p) => (
            <select {...p} value={state} onChange={(e) => setState(e.target.value as JobState | '')}>
              <option value="">All states</option>
              {JOB_STATES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          )}
        </Field>
      </div>
      <ErrorMessage error={names.error} />
      <Loaded resource={jobs}>
        {(page) =>
          page.items.length === 0 ? (
            <p>{state ? `No ${state} jobs.` : 'No jobs yet.'}</p>
          ) : (
            <>
              <JobTable jobs={page.items} names={names} />
              {page.nextCursor ? <p className="muted">The newest {SHOWN} jobs are shown.</p> : null}
            </>
          )
        }
      </Loaded>
    </>
  );
}

export function JobTable({ jobs, names }: { jobs: readonly Job[]; names: ItemNames }) {
  const userName = useUserNames();
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">Job</th>
          <th scope="col">Item</th>
          <th scope="col">State</th>
          <th scope="col">Current step</th>
          <th scope="col">Progress</th>
          <th scope="col">Started</th>
          <th scope="col">Duration</th>
          <th scope="col">Initiator</th>
        </tr>
      </thead>
      <tbody>
        {jobs.map((job) => {
          const kind = jobKindWords(job.kind);
          const cur = currentStep(job);
          const done = job.steps.filter((s) => s.state === 'succeeded').length;
          return (
            <tr key={job.id}>
              <td>
                <Link to={`/jobs/${job.id}`}>{kind}</Link>
              </td>
              <td>
                <JobSubject job={job} names={names} />
              </td>
              <td>
                <Badge value={job.state} />
              </td>
              <td>{cur ? cur.step.name : <span className="muted">—</span>}</td>
              <td>
                <ProgressBar percent={jobPercent(job)} label={`${kind} ${job.id} progress`} />
                <small className="muted">
                  {done} of {job.steps.length} steps
                </small>
              </td>
              <td>{formatTime(job.startedAt)}</td>
              <td>{formatDuration(jobSeconds(job))}</td>
              <td>{userName(job.initiator)}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** What a job is about: its item (by machine name, linked), or "recovery plan". */
export function JobSubject({ job, names }: { job: Job; names: ItemNames }) {
  if (job.itemId === null) return <span>{job.kind === 'recovery-plan' ? 'recovery plan' : '—'}</span>;
  return <Link to={`/items/${job.itemId}`}>{names.name(job.itemId) ?? job.itemId}</Link>;
}
