import { PageHeader } from '../components';

export function Jobs() {
  return <PageHeader title="Jobs" />;
}
