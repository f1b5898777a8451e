import type { ComputeDriver } from '../../compute/driver.js';
import { LifeboatError } from '../../core/errors.js';
import type { DrillReport, Job } from '../../core/model.js';
import type { ApiClient } from '../api-client.js';
import { until } from './wait.js';

/** A test failover as it ended: the drill report, and what the compute driver made (machine files) before cleanup. */
export interface DrillResult {
  readonly report: DrillReport;
  readonly job: Job;
  readonly machineFiles: readonly string[];
}

/** Resolves with the job once it ended (any state). */
export function waitForJob(api: ApiClient, jobId: string, timeoutMs = 600_000): Promise<Job> {
  return until(`job ${jobId} to end`, timeoutMs, async () => {
    const job = await api.get<Job>(`/api/v1/jobs/${jobId}`);
    return job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled' ? job : undefined;
  });
}

/** The item's drill reports, newest first. */
export async function drillReports(api: ApiClient, itemId: string): Promise<DrillReport[]> {
  return (await api.get<{ items: DrillReport[] }>(`/api/v1/items/${itemId}/drill-reports`)).items;
}

/** The drill report a test failover job writes. */
export async function reportOf(api: ApiClient, itemId: string, jobId: string): Promise<DrillReport> {
  const report = (await drillReports(api, itemId)).find((r) => r.jobId === jobId);
  if (!report) throw new LifeboatError('NOT_FOUND', `job ${jobId} wrote no drill report`);
  return report;
}

/**
 * Starts a test failover at the newest processed point and waits for its job
 * (which ends once the boot marker and probes of the item's drill settings were
 * checked); notes what the compute driver made, and leaves the test machine in
 * place: `cleanupTestFailover` removes it.
 */
export async function testFailover(api: ApiClient, compute: ComputeDriver, itemId: string, options: { timeoutMs?: number } = {}): Promise<DrillResult> {
  const started = await api.post<Job>(`/api/v1/items/${itemId}/test-failover`, { point: { kind: 'latest-processed' } });
  const job = await waitForJob(api, started.id, options.timeoutMs);
  const report = await reportOf(api, itemId, job.id);
  const machine = report.machineId === null ? undefined : (await compute.list()).find((m) => m.id === report.machineId);
  return { report, job, machineFiles: machine?.files ?? [] };
}

/** Cleans the item's test failover up (machine stopped and destroyed, notes kept); resolves with the final report. */
export async function cleanupTestFailover(api: ApiClient, itemId: string, reportId: string, notes: string): Promise<DrillReport> {
  const job = await api.post<Job>(`/api/v1/items/${itemId}/test-failover/cleanup`, { notes });
  const ended = await waitForJob(api, job.id);
  if (ended.state !== 'succeeded') throw new LifeboatError('DRILL_FAILED', `the cleanup of the test failover ${ended.state}: ${ended.error ?? 'no error recorded'}`);
  const report = (await drillReports(api, itemId)).find((r) => r.id === reportId);
  if (!report) throw new LifeboatError('NOT_FOUND', `drill report ${reportId} is gone`);
  return report;
}
