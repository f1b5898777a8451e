import { useState } from 'react';
import { api } from '../api';
import { Badge, ErrorMessage, Loaded, PageHeader, formatAge, useResource } from '../components';
import { useItemNames } from '../item-names';
import { useAllPages } from '../paged';
import { PlanForm, type PlanBody } from '../plan-form';
import { Link, navigate } from '../router';
import { useSession } from '../session';
import type { DrillReport, RecoveryPlan, Vault } from '../types';

const REFRESH_MS = 5000;

/** Recovery plans: the list, and "Create plan" for those who may configure. */
export function Plans() {
  const session = useSession();
  const plans = useAllPages<RecoveryPlan>('/api/v1/plans', REFRESH_MS);
  const vaults = useAllPages<Vault>('/api/v1/vaults');
  const names = useItemNames(REFRESH_MS * 3);
  const [creating, setCreating] = useState(false);
  const vaultName = new Map((vaults.data ?? []).map((v) => [v.id, v.name]));
  const create = async (body: PlanBody) => {
    const plan = await api.post<RecoveryPlan>('/api/v1/plans', body);
    setCreating(false);
    plans.reload();
    navigate(`/plans/${plan.id}`);
  };
  return (
    <>
      <PageHeader title="Recovery plans">
        {session.can('configure') && !creating ? (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            Create plan
          </button>
        ) : null}
      </PageHeader>
      <ErrorMessage error={vaults.error ?? names.error} />
      {creating ? (
        <>
          <h2>New recovery plan</h2>
          {vaults.data && vaults.data.length === 0 ? <p>Create a vault first: a plan groups the replicated items of one vault.</p> : null}
          {vaults.data ? <PlanForm vaults={vaults.data} names={names} submitLabel="Create plan" onSubmit={create} onCancel={() => setCreating(false)} /> : null}
        </>
      ) : null}
      <Loaded resource={plans}>
        {(list) =>
          list.length === 0 ? (
            <p>No recovery plans yet.</p>
          ) : (
            <table aria-label="Recovery plans">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Vault</th>
                  <th scope="col">Groups</th>
                  <th scope="col">Items</th>
                  <th scope="col">Last drill</th>
                </tr>
              </thead>
              <tbody>
                {list.map((p) => (
                  <tr key={p.id}>
                    <td>
                      <Link to={`/plans/${p.id}`}>{p.name}</Link>
                      {p.description ? <div className="muted">{p.description}</div> : null}
                    </td>
                    <td>{vaultName.get(p.vaultId) ?? p.vaultId}</td>
                    <td>{p.groups.length}</td>
                    <td>{p.groups.reduce((n, g) => n + g.itemIds.length, 0)}</td>
                    <td>
                      <LastDrill plan={p} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </>
  );
}

/**
 * The plan's newest drill: the newest test-failover report of its first item that this
 * plan ran (every item of a plan's drill gets a report naming the plan).
 */
export function LastDrill({ plan }: { plan: RecoveryPlan }) {
  const first = plan.groups[0]?.itemIds[0];
  const reports = useResource<{ items: readonly DrillReport[] }>(first ? `/api/v1/items/${encodeURIComponent(first)}/drill-reports` : null, REFRESH_MS * 6);
  const last = reports.data?.items.find((r) => r.planId === plan.id && r.operation === 'test-failover');
  if (reports.error) return <ErrorMessage error={reports.error} />;
  if (!last) return <span className="muted">never</span>;
  return (
    <span>
      <Badge value={last.outcome} /> {formatAge(last.startedAt)}
    </span>
  );
}
