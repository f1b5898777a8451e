import { PageHeader } from '../components';

export function Policies() {
  return <PageHeader title="Policies" />;
}
