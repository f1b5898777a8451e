import type { PointChoice, RecoveryPlan } from '../../core/model.js';

/** What a plan's job does to its items (docs/recovery.md, "Recovery plans"). */
export type PlanOperation = 'test-failover' | 'cleanup-test-failover' | 'failover';
export const PLAN_OPERATIONS: readonly PlanOperation[] = ['test-failover', 'cleanup-test-failover', 'failover'];

interface InGroup {
  /** 1-based, as the step names show it. */
  readonly group: number;
  readonly groupName: string;
}

/** One step of a plan's job: what its name says, in a form the step handler reads. */
export type PlanStep =
  | (InGroup & { readonly kind: 'pre-script' | 'post-script'; readonly script: string })
  | (InGroup & { readonly kind: 'items'; readonly itemIds: readonly string[] })
  | (InGroup & { readonly kind: 'manual'; readonly text: string });

/**
 * Everything a plan's job needs, fixed when it is created (stored under
 * `planRunKey(jobId)`): later edits of the plan never change a job that runs.
 */
export interface PlanRun {
  readonly planId: string;
  readonly planName: string;
  readonly operation: PlanOperation;
  /** Test failover and failover: the point every item uses. */
  readonly point: PointChoice | null;
  readonly shutdownSource: boolean;
  readonly notes: string | null;
  /** A scheduled drill runs unattended: its manual actions pass without waiting. */
  readonly unattended: boolean;
  readonly initiator: string;
  readonly steps: readonly PlanStep[];
}

export const planRunKey = (jobId: string): string => `plan-run:${jobId}`;
/** The item jobs an items step started, by item id: a restart waits for them instead of starting new ones. */
export const planStepKey = (jobId: string, index: number): string => `plan-step:${jobId}:${index}`;
/** An operator's acknowledgement of a manual action. */
export const planAckKey = (jobId: string, index: number): string => `plan-ack:${jobId}:${index}`;

export interface PlanAck {
  readonly by: string;
  readonly at: string;
}

/**
 * The steps of one operation of a plan, group after group: pre-scripts, the
 * group's items (in parallel), manual actions, post-scripts. A cleanup has no
 * manual actions: it only takes down what the test failover made.
 */
export function planSteps(plan: Pick<RecoveryPlan, 'groups'>, operation: PlanOperation): PlanStep[] {
  const steps: PlanStep[] = [];
  plan.groups.forEach((g, i) => {
    const at = { group: i + 1, groupName: g.name };
    for (const script of g.preScripts) steps.push({ ...at, kind: 'pre-script', script });
    steps.push({ ...at, kind: 'items', itemIds: [...g.itemIds] });
    if (operation !== 'cleanup-test-failover') for (const text of g.manualActions) steps.push({ ...at, kind: 'manual', text });
    for (const script of g.postScripts) steps.push({ ...at, kind: 'post-script', script });
  });
  return steps;
}

const ITEMS_VERB: Readonly<Record<PlanOperation, string>> = {
  'test-failover': 'test failover of',
  'cleanup-test-failover': 'clean up the test failover of',
  failover: 'failover of',
};

/** The step's name as the job shows it, e.g. "Group 1 (web): test failover of 2 items". */
export function planStepName(step: PlanStep, operation: PlanOperation): string {
  const prefix = `Group ${step.group} (${step.groupName}): `;
  switch (step.kind) {
    case 'pre-script':
      return `${prefix}pre-script ${step.script}`;
    case 'post-script':
      return `${prefix}post-script ${step.script}`;
    case 'manual':
      return `${prefix}manual action: ${step.text}`;
    case 'items':
      return `${prefix}${ITEMS_VERB[operation]} ${step.itemIds.length} item${step.itemIds.length === 1 ? '' : 's'}`;
  }
}
