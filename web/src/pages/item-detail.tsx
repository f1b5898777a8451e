import { PageHeader } from '../components';

export function ItemDetail({ id }: { id: string }) {
  return <PageHeader title={`Replicated item ${id}`} />;
}
