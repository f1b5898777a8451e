import { PageHeader } from '../components';

export function Items() {
  return <PageHeader title="Replicated items" />;
}
