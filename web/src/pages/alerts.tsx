import { useState } from 'react';
import { Badge, ErrorMessage, Field, Loaded, PageHeader, formatAge, formatTime } from '../components';
import { useItemNames } from '../item-names';
import { alertKindWords } from '../job-words';
import { newestFirst, useAllPages } from '../paged';
import { Link } from '../router';
import type { Alert, RecoveryPlan } from '../types';
import '../filters.css';

const REFRESH_MS = 5000;
type Severity = Alert['severity'];
const SEVERITY_RANK: Record<Severity, number> = { critical: 0, warning: 1 };

/** Open alerts first (critical first, then newest), then cleared ones on demand; filter by severity. */
export function Alerts() {
  const [showCleared, setShowCleared] = useState(false);
  const [severity, setSeverity] = useState<Severity | ''>('');
  const alerts = useAllPages<Alert>(`/api/v1/alerts?status=${showCleared ? 'all' : 'open'}`, REFRESH_MS);
  return (
    <>
      <PageHeader title="Alerts" />
      <div className="panel filters">
        <Field label="Severity">
          {(p) => (
            <select {...p} value={severity} onChange={(e) => setSeverity(e.target.value as Severity | '')}>
              <option value="">All severities</option>
              <option value="critical">critical</option>
              <option value="warning">warning</option>
            </select>
          )}
        </Field>
        <label>
          <input type="checkbox" checked={showCleared} onChange={(e) => setShowCleared(e.target.checked)} /> Show cleared
        </label>
      </div>
      <Loaded resource={alerts}>
        {(list) => {
          const shown = list.filter((a) => !severity || a.severity === severity);
          // Critical before warning, then newest first.
          const open = newestFirst(
            shown.filter((a) => a.clearedAt === null),
            (a) => a.raisedAt,
          ).sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]);
          const cleared = newestFirst(
            shown.filter((a) => a.clearedAt !== null),
            (a) => a.clearedAt!,
          );
          return (
            <>
              <h2>Open alerts</h2>
              {open.length === 0 ? <p>No open {severity ? `${severity} ` : ''}alerts.</p> : <AlertTable caption="Open alerts" alerts={open} />}
              {showCleared ? (
                <>
                  <h2>Cleared alerts</h2>
                  {cleared.length === 0 ? <p>No cleared {severity ? `${severity} ` : ''}alerts.</p> : <AlertTable caption="Cleared alerts" alerts={cleared} />}
                </>
              ) : null}
            </>
          );
        }}
      </Loaded>
    </>
  );
}

function AlertTable({ caption, alerts }: { caption: string; alerts: readonly Alert[] }) {
  const names = useItemNames(REFRESH_MS * 6);
  const plans = useAllPages<RecoveryPlan>('/api/v1/plans', REFRESH_MS * 6);
  const planNames = new Map((plans.data ?? []).map((p) => [p.id, p.name]));
  const cleared = alerts.some((a) => a.clearedAt !== null);
  return (
    <>
      <ErrorMessage error={names.error} />
      <table aria-label={caption}>
        <thead>
          <tr>
            <th scope="col">Severity</th>
            <th scope="col">Kind</th>
            <th scope="col">Subject</th>
            <th scope="col">Message</th>
            <th scope="col">Raised</th>
            {cleared ? <th scope="col">Cleared</th> : null}
          </tr>
        </thead>
        <tbody>
          {alerts.map((a) => {
            const item = names.name(a.subjectId);
            const plan = planNames.get(a.subjectId);
            return (
              <tr key={a.id}>
                <td>
                  <Badge value={a.severity} />
                </td>
                <td>{alertKindWords(a.kind)}</td>
                <td>
                  {item !== undefined ? (
                    <Link to={`/items/${a.subjectId}`}>{item}</Link>
                  ) : plan !== undefined ? (
                    <Link to={`/plans/${a.subjectId}`}>{plan}</Link>
                  ) : (
                    a.subjectId
                  )}
                </td>
                <td>{a.message}</td>
                <td title={formatTime(a.raisedAt)}>{formatAge(a.raisedAt)}</td>
                {cleared ? <td>{formatTime(a.clearedAt)}</td> : null}
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}
