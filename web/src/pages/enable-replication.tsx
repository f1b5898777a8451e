import { PageHeader } from '../components';

export function EnableReplication() {
  return <PageHeader title="Enable replication" />;
}
