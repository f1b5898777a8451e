import { PageHeader } from '../components';

export function PlanDetail({ id }: { id: string }) {
  return <PageHeader title={`Recovery plan ${id}`} />;
}
