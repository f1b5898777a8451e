import type { ReactNode } from 'react';
import { Link, match, usePath } from './router';
import { useSession } from './session';
import { ChangePassword } from './change-password';
import { SignIn } from './pages/sign-in';
import { Overview } from './pages/overview';
import { Items } from './pages/items';
import { ItemDetail } from './pages/item-detail';
import { Jobs } from './pages/jobs';
import { JobDetail } from './pages/job-detail';
import { Alerts } from './pages/alerts';
import { Plans } from './pages/plans';
import { PlanDetail } from './pages/plan-detail';
import { Policies } from './pages/policies';
import { Infrastructure } from './pages/infrastructure';
import { EnableReplication } from './pages/enable-replication';

interface RouteEntry {
  readonly pattern: string;
  readonly render: (params: Record<string, string>) => ReactNode;
}

/** Every view of the portal, by hash path; the first match wins. */
const ROUTES: readonly RouteEntry[] = [
  { pattern: '/', render: () => <Overview /> },
  { pattern: '/items', render: () => <Items /> },
  { pattern: '/items/:id', render: (p) => <ItemDetail id={p.id!} /> },
  { pattern: '/jobs', render: () => <Jobs /> },
  { pattern: '/jobs/:id', render: (p) => <JobDetail id={p.id!} /> },
  { pattern: '/alerts', render: () => <Alerts /> },
  { pattern: '/plans', render: () => <Plans /> },
  { pattern: '/plans/:id', render: (p) => <PlanDetail id={p.id!} /> },
  { pattern: '/policies', render: () => <Policies /> },
  { pattern: '/infrastructure', render: () => <Infrastructure /> },
  { pattern: '/enable-replication', render: () => <EnableReplication /> },
];

const NAV: readonly { readonly to: string; readonly label: string; readonly section: string }[] = [
  { to: '/', label: 'Overview', section: '' },
  { to: '/items', label: 'Replicated items', section: 'items' },
  { to: '/jobs', label: 'Jobs', section: 'jobs' },
  { to: '/alerts', label: 'Alerts', section: 'alerts' },
  { to: '/plans', label: 'Recovery plans', section: 'plans' },
  { to: '/policies', label: 'Policies', section: 'policies' },
  { to: '/infrastructure', label: 'Infrastructure', section: 'infrastructure' },
  { to: '/enable-replication', label: 'Enable replication', section: 'enable-replication' },
];

export function App() {
  const session = useSession();
  const path = usePath();
  if (session.checking) return <p aria-live="polite">Loading…</p>;
  if (!session.me) return <SignIn />;
  const section = path.split('/')[1] ?? '';
  let view: ReactNode = <p>There is no page at {path}.</p>;
  for (const r of ROUTES) {
    const params = match(r.pattern, path);
    if (params) {
      view = r.render(params);
      break;
    }
  }
  const who = session.me.user?.name ?? session.me.id;
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">Lifeboat</span>
        <span className="who">
          {who} ({session.me.role})
        </span>
        {session.me.user ? <ChangePassword /> : null}
        <button type="button" onClick={() => void session.signOut()}>
          Sign out
        </button>
      </header>
      <div className="layout">
        <nav aria-label="Main">
          <ul>
            {NAV.filter((n) => n.section !== 'enable-replication' || session.can('configure')).map((n) => (
              <li key={n.to}>
                <Link to={n.to} aria-current={section === n.section ? 'page' : undefined}>
                  {n.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <main id="main" tabIndex={-1}>
          {view}
        </main>
      </div>
    </>
  );
}
