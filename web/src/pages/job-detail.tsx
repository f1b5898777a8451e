import { useEffect, useState } from 'react';
import { api } from '../api';
import { Badge, ConfirmAction, ErrorMessage, PageHeader, ProgressBar, formatDuration, formatTime } from '../components';
import { useItemNames } from '../item-names';
import { jobEnded, jobKindWords, jobSeconds, waitingManualAction } from '../job-words';
import { useLiveJob, type LiveStatus } from '../live-job';
import { useSession } from '../session';
import type { Job, JobState, JobStep } from '../types';
import { useUserNames } from '../user-names';
import { JobSubject } from './jobs';
import '../job-detail.css';

const STATUS_WORDS: Record<LiveStatus, string> = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  ended: 'ended',
};

/** One job and its steps, live through its event stream (no reload); cancel and, for a plan's job, acknowledge a manual action. */
export function JobDetail({ id }: { id: string }) {
  const { job, status, error, setJob } = useLiveJob(id);
  const names = useItemNames();
  const userName = useUserNames();
  const now = useNow(job !== undefined && !jobEnded(job));
  const title = job ? jobKindWords(job.kind) : `Job ${id}`;
  return (
    <>
      <PageHeader title={title}>
        <span className={`live-status ${status}`} role="status" aria-label={`Updates: ${STATUS_WORDS[status]}`}>
          {STATUS_WORDS[status]}
        </span>
      </PageHeader>
      <ErrorMessage error={error} />
      {job === undefined ? (
        error ? null : <p aria-live="polite">Loading…</p>
      ) : (
        <>
          <section className="panel" aria-label="Job">
            <dl className="facts">
              <dt>Job</dt>
              <dd>{job.id}</dd>
              <dt>Item</dt>
              <dd>
                <JobSubject job={job} names={names} />
              </dd>
              <dt>State</dt>
              <dd>
                <Badge value={job.state} />
              </dd>
              <dt>Created</dt>
              <dd>{formatTime(job.createdAt)}</dd>
              <dt>Started</dt>
              <dd>{formatTime(job.startedAt)}</dd>
              <dt>Ended</dt>
              <dd>{formatTime(job.endedAt)}</dd>
              <dt>Duration</dt>
              <dd>{formatDuration(jobSeconds(job, now))}</dd>
              <dt>Initiator</dt>
              <dd>{userName(job.initiator)}</dd>
              {job.error ? (
                <>
                  <dt>Error</dt>
                  <dd className="step-error">{job.error}</dd>
                </>
              ) : null}
            </dl>
          </section>
          <JobActions job={job} onChanged={setJob} />
          <h2>Steps</h2>
          <ol className="steps" aria-label="Steps">
            {job.steps.map((step, i) => (
              <StepRow key={i} step={step} now={now} />
            ))}
          </ol>
        </>
      )}
    </>
  );
}

/** Re-renders every second while `ticking` (the running job's duration). */
function useNow(ticking: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!ticking) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [ticking]);
  return now;
}

const STEP_ICONS: Record<JobState, string> = {
  queued: '○',
  running: '▶',
  succeeded: '✓',
  failed: '✗',
  cancelled: '⊘',
};

/** A step's time of day (the job's dates are in its header). */
const clock = (iso: string): string => new Date(iso).toLocaleTimeString();

function StepRow({ step, now }: { step: JobStep; now: number }) {
  return (
    <li>
      <span className={`step-icon ${step.state}`} role="img" aria-label={step.state}>
        {STEP_ICONS[step.state]}
      </span>
      <div>
        <div>{step.name}</div>
        {step.error ? <div className="step-error">{step.error}</div> : null}
      </div>
      <div>{step.state === 'running' ? <ProgressBar percent={step.progressPercent} label={`${step.name} progress`} /> : <Badge value={step.state} />}</div>
      <div className="step-times">
        {step.startedAt ? (
          <>
            <time dateTime={step.startedAt} title={formatTime(step.startedAt)}>
              {clock(step.startedAt)}
            </time>
            {step.endedAt ? (
              <>
                {' → '}
                <time dateTime={step.endedAt} title={formatTime(step.endedAt)}>
                  {clock(step.endedAt)}
                </time>
              </>
            ) : null}
            <div>{formatDuration(jobSeconds(step, now))}</div>
          </>
        ) : null}
      </div>
    </li>
  );
}

function JobActions({ job, onChanged }: { job: Job; onChanged(job: Job): void }) {
  const session = useSession();
  if (!session.can('operate') || jobEnded(job)) return null;
  const manual = waitingManualAction(job);
  const path = `/api/v1/jobs/${encodeURIComponent(job.id)}`;
  return (
    <>
      {manual ? (
        <div className="panel manual-action">
          <p>
            <strong>Waiting for a manual action:</strong> {manual.text}
          </p>
          <ConfirmAction
            label="Acknowledge"
            title="Acknowledge the manual action"
            confirmLabel="Acknowledge"
            onConfirm={async () => onChanged(await api.post<Job>(`${path}/acknowledge`, { step: manual.step }))}
          >
            <p>
              Confirm that this is done: <strong>{manual.text}</strong>. The plan then carries on with its next step.
            </p>
          </ConfirmAction>
        </div>
      ) : null}
      <div className="page-actions">
        <ConfirmAction label="Cancel job" title="Cancel this job" confirmLabel="Cancel job" danger onConfirm={async () => onChanged(await api.post<Job>(`${path}/cancel`, {}))}>
          <p>
            The job stops before its next step; what its steps already did stays. Jobs that must never stop half-way (failover, commit, …) are refused by the
            vault.
          </p>
        </ConfirmAction>
      </div>
    </>
  );
}
