import { PageHeader } from '../components';

export function Plans() {
  return <PageHeader title="Recovery plans" />;
}
