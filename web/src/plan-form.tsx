import { useState, type FormEvent } from 'react';
import { ErrorMessage, Field, useAction } from './components';
import type { ItemNames } from './item-names';
import type { RecoveryPlan, RecoveryPlanGroup, Vault } from './types';

/** What the form sends: `POST /api/v1/plans` (with vaultId) or `PATCH /api/v1/plans/:id` (without). */
export interface PlanBody {
  readonly vaultId?: string;
  readonly name: string;
  readonly description: string;
  readonly groups: readonly RecoveryPlanGroup[];
}

interface GroupDraft {
  key: number;
  name: string;
  itemIds: string[];
  preScripts: string;
  postScripts: string;
  manualActions: string;
}

let nextKey = 1;
const draftOf = (g?: RecoveryPlanGroup): GroupDraft => ({
  key: nextKey++,
  name: g?.name ?? '',
  itemIds: [...(g?.itemIds ?? [])],
  preScripts: (g?.preScripts ?? []).join(' '),
  postScripts: (g?.postScripts ?? []).join(' '),
  manualActions: (g?.manualActions ?? []).join('\n'),
});

const words = (text: string): string[] => text.split(/[\s,]+/).filter(Boolean);
const lines = (text: string): string[] =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);

/**
 * A recovery plan's definition: name, description and its groups in order, each a
 * name, items of the plan's vault (by machine name), scripts and manual actions.
 * Creating also picks the vault; editing keeps it. The vault validates; its errors are
 * shown as they come.
 */
export function PlanForm({
  plan,
  vaults,
  names,
  submitLabel,
  onSubmit,
  onCancel,
}: {
  plan?: RecoveryPlan;
  vaults: readonly Vault[];
  names: ItemNames;
  submitLabel: string;
  onSubmit(body: PlanBody): Promise<void>;
  onCancel(): void;
}) {
  const [vaultId, setVaultId] = useState(plan?.vaultId ?? vaults[0]?.id ?? '');
  const [name, setName] = useState(plan?.name ?? '');
  const [description, setDescription] = useState(plan?.description ?? '');
  const [groups, setGroups] = useState<GroupDraft[]>(() => (plan ? plan.groups.map(draftOf) : [draftOf()]));
  const { busy, error, run } = useAction();
  const items = names.items.filter((i) => i.vaultId === vaultId);
  const change = (key: number, patch: Partial<GroupDraft>) => setGroups((gs) => gs.map((g) => (g.key === key ? { ...g, ...patch } : g)));

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(() =>
      onSubmit({
        ...(plan ? {} : { vaultId }),
        name: name.trim(),
        description,
        groups: groups.map((g) => ({
          name: g.name.trim(),
          itemIds: g.itemIds,
          preScripts: words(g.preScripts),
          postScripts: words(g.postScripts),
          manualActions: lines(g.manualActions),
        })),
      }),
    );
  };

  return (
    <form className="panel" onSubmit={submit} aria-label={submitLabel}>
      {plan ? null : (
        <Field label="Vault">
          {(p) => (
            <select {...p} value={vaultId} required onChange={(e) => setVaultId(e.target.value)}>
              {vaults.map((v) => (
                <option key={v.id} value={v.id}>
                  {v.name}
                </option>
              ))}
            </select>
          )}
        </Field>
      )}
      <Field label="Plan name">{(p) => <input {...p} value={name} required onChange={(e) => setName(e.target.value)} />}</Field>
      <Field label="Description">{(p) => <textarea {...p} rows={2} value={description} onChange={(e) => setDescription(e.target.value)} />}</Field>
      {groups.map((g, i) => {
        const n = i + 1;
        return (
          <fieldset key={g.key}>
            <legend>Group {n}</legend>
            <Field label={`Group ${n} name`}>{(p) => <input {...p} value={g.name} required onChange={(e) => change(g.key, { name: e.target.value })} />}</Field>
            <Field label={`Group ${n} items`} hint="Failed over in parallel. Hold Ctrl (or ⌘) to choose several.">
              {(p) => (
                <select
                  {...p}
                  multiple
                  size={Math.min(6, Math.max(2, items.length))}
                  value={g.itemIds}
                  onChange={(e) => change(g.key, { itemIds: [...e.target.selectedOptions].map((o) => o.value) })}
                >
                  {items.map((item) => (
                    <option key={item.id} value={item.id}>
                      {names.name(item.id) ?? item.id}
                    </option>
                  ))}
                </select>
              )}
            </Field>
            <Field label={`Group ${n} pre-scripts`} hint="Optional: names of executables in the vault's scripts directory, separated by spaces, run before the group.">
              {(p) => <input {...p} value={g.preScripts} onChange={(e) => change(g.key, { preScripts: e.target.value })} />}
            </Field>
            <Field label={`Group ${n} post-scripts`} hint="Optional: run after the group and its manual actions.">
              {(p) => <input {...p} value={g.postScripts} onChange={(e) => change(g.key, { postScripts: e.target.value })} />}
            </Field>
            <Field label={`Group ${n} manual actions`} hint="Optional, one per line: each pauses the plan until an operator acknowledges it.">
              {(p) => <textarea {...p} rows={2} value={g.manualActions} onChange={(e) => change(g.key, { manualActions: e.target.value })} />}
            </Field>
            {groups.length > 1 ? (
              <button type="button" onClick={() => setGroups((gs) => gs.filter((x) => x.key !== g.key))}>
                Remove group {n}
              </button>
            ) : null}
          </fieldset>
        );
      })}
      <p>
        <button type="button" onClick={() => setGroups((gs) => [...gs, draftOf()])}>
          Add group
        </button>
      </p>
      <ErrorMessage error={error} />
      <div className="dialog-actions">
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Working…' : submitLabel}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
