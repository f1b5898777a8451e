import { PageHeader } from '../components';

export function Overview() {
  return <PageHeader title="Overview" />;
}
