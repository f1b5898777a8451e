import { PageHeader } from '../components';

export function Infrastructure() {
  return <PageHeader title="Infrastructure" />;
}
