import { useState } from 'react';
import { Badge, ErrorMessage, Field, formatDuration, Loaded, PageHeader, ProgressBar } from '../components';
import { itemHealth } from '../health';
import { useAllPages } from '../paged';
import { Link } from '../router';
import '../items.css';
import { ITEM_STATES, type Alert, type ItemState, type Machine, type ReplicatedItem, type ReplicationPolicy } from '../types';

/** The states an item can be in, in life-cycle order. */
const STATES = ITEM_STATES;

/** "3 min 5 s of 10 min 0 s", or why there is none. */
export function rpoText(item: ReplicatedItem, policy: ReplicationPolicy | undefined): string {
  const threshold = policy ? formatDuration(policy.rpoThresholdSeconds) : null;
  if (item.rpoSeconds === null) return threshold ? `no point yet (threshold ${threshold})` : 'no point yet';
  return threshold ? `${formatDuration(item.rpoSeconds)} of ${threshold}` : formatDuration(item.rpoSeconds);
}

/** Replicated items: what each protects, its state and health, its RPO against the threshold; refreshed every 5 s. */
export function Items() {
  const items = useAllPages<ReplicatedItem>('/api/v1/items', 5000);
  const machines = useAllPages<Machine>('/api/v1/machines', 30_000);
  const policies = useAllPages<ReplicationPolicy>('/api/v1/policies', 30_000);
  const alerts = useAllPages<Alert>('/api/v1/alerts', 5000);
  const [state, setState] = useState<ItemState | ''>('');
  const [text, setText] = useState('');
  const machineOf = new Map((machines.data ?? []).map((m) => [m.id, m]));
  const policyOf = new Map((policies.data ?? []).map((p) => [p.id, p]));
  return (
    <>
      <PageHeader title="Replicated items" />
      <div className="panel filters" role="search" aria-label="Filter items">
        <Field label="State">
          {(props) => (
            <select {...props} value={state} onChange={(e) => setState(e.target.value as ItemState | '')}>
              <option value="">All states</option>
              {STATES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Machine name contains">
          {(props) => <input {...props} type="search" value={text} onChange={(e) => setText(e.target.value)} />}
        </Field>
      </div>
      <ErrorMessage error={machines.error ?? policies.error ?? alerts.error} />
      <Loaded resource={items}>
        {(all) => {
          const needle = text.trim().toLowerCase();
          const shown = all.filter(
            (i) => (state === '' || i.state === state) && (needle === '' || (machineOf.get(i.machineId)?.name ?? i.machineId).toLowerCase().includes(needle)),
          );
          if (all.length === 0)
            return (
              <p>
                No replicated items yet. <Link to="/enable-replication">Enable replication</Link> for a machine.
              </p>
            );
          return (
            <table>
              <caption>
                {shown.length} of {all.length} replicated items
              </caption>
              <thead>
                <tr>
                  <th scope="col">Machine</th>
                  <th scope="col">IP</th>
                  <th scope="col">OS</th>
                  <th scope="col">State</th>
                  <th scope="col">Health</th>
                  <th scope="col">RPO (of threshold)</th>
                  <th scope="col">Initial replication</th>
                </tr>
              </thead>
              <tbody>
                {shown.map((item) => {
                  const m = machineOf.get(item.machineId);
                  const policy = policyOf.get(item.policyId);
                  const verdict = itemHealth(item, policy, alerts.data ?? []);
                  const name = m?.name ?? item.machineId;
                  return (
                    <tr key={item.id}>
                      <th scope="row">
                        <Link to={`/items/${item.id}`}>{name}</Link>
                      </th>
                      <td>{m?.privateIp ?? '—'}</td>
                      <td>{m?.os ?? '—'}</td>
                      <td>
                        <Badge value={item.state} />
                      </td>
                      <td>
                        <Badge value={verdict.health} /> <span className="muted">{verdict.reason}</span>
                      </td>
                      <td>{rpoText(item, policy)}</td>
                      <td>
                        {item.state === 'initial-replication' ? (
                          <ProgressBar percent={item.initialReplicationPercent} label={`Initial replication of ${name}`} />
                        ) : item.state === 'enabling' ? (
                          'not started'
                        ) : (
                          'done'
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          );
        }}
      </Loaded>
    </>
  );
}
