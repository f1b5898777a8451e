import { PageHeader } from '../components';

export function JobDetail({ id }: { id: string }) {
  return <PageHeader title={`Job ${id}`} />;
}
