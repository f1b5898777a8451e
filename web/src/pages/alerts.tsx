import { PageHeader } from '../components';

export function Alerts() {
  return <PageHeader title="Alerts" />;
}
