import { useEffect, useRef, useState } from 'react';
import { ApiError, streamEvents } from './api';
import { jobEnded } from './job-words';
import type { Job } from './types';

/** connecting → live (events arriving) → ended; reconnecting while the stream is down and the job runs. */
export type LiveStatus = 'connecting' | 'live' | 'reconnecting' | 'ended';

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 5000;

export interface LiveJob {
  readonly job: Job | undefined;
  readonly status: LiveStatus;
  /** A refusal (404, 403) that ended following; a dropped stream is retried, not an error. */
  readonly error: unknown;
  /** Shows a job an action answered with at once, before the stream catches up. */
  setJob(job: Job): void;
}

/**
 * Follows a job through `GET /api/v1/jobs/:id/events` (each event is the whole job):
 * when the stream drops while the job has not ended, it opens it again after a short
 * back-off (0.5 s doubling to 5 s); it stops when the job has ended.
 */
export function useLiveJob(id: string): LiveJob {
  const [job, setJobState] = useState<Job | undefined>(undefined);
  const [status, setStatus] = useState<LiveStatus>('connecting');
  const [error, setError] = useState<unknown>(null);
  const latest = useRef<Job | undefined>(undefined);

  useEffect(() => {
    const abort = new AbortController();
    latest.current = undefined;
    setJobState(undefined);
    setStatus('connecting');
    setError(null);
    const follow = async (): Promise<void> => {
      let retryMs = FIRST_RETRY_MS;
      while (!abort.signal.aborted) {
        try {
          await streamEvents<Job>(
            `/api/v1/jobs/${encodeURIComponent(id)}/events`,
            (j) => {
              latest.current = j;
              setJobState(j);
              setStatus(jobEnded(j) ? 'ended' : 'live');
              setError(null);
              retryMs = FIRST_RETRY_MS;
            },
            abort.signal,
          );
        } catch (err) {
          if (abort.signal.aborted) return;
          // The job is gone or may not be read: retrying cannot help. Anything else (the
          // vault restarting, the network) is a dropped stream, shown as "reconnecting".
          if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
            setError(err);
            setStatus('ended');
            return;
          }
        }
        if (latest.current && jobEnded(latest.current)) {
          setStatus('ended');
          return;
        }
        setStatus('reconnecting');
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, retryMs);
          abort.signal.addEventListener('abort', () => {
            clearTimeout(t);
            resolve();
          }, { once: true });
        });
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
      }
    };
    void follow();
    return () => abort.abort();
  }, [id]);

  return {
    job,
    status,
    error,
    setJob: (j: Job) => {
      latest.current = j;
      setJobState(j);
    },
  };
}
