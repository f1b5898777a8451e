import { useId, useState } from 'react';
import { formatTime } from './components';
import type { ItemPoint, PointChoice } from './types';

/**
 * Which recovery point a test failover, failover or change of point uses
 * (docs/api.md, "Recovery": `point`): a radio group, with a list of the item's points
 * for "a specific point" and a local date and time for "a time".
 */

export type PointKind = PointChoice['kind'];

export interface PointPickerState {
  readonly kind: PointKind;
  readonly pointId: string;
  /** The value of a datetime-local input (local time, no zone). */
  readonly at: string;
}

export const DEFAULT_POINT: PointPickerState = { kind: 'latest-processed', pointId: '', at: '' };

const OPTIONS: readonly { readonly kind: PointKind; readonly label: string }[] = [
  { kind: 'latest-processed', label: 'Latest processed (fastest)' },
  { kind: 'latest-app-consistent', label: 'Latest app-consistent' },
  { kind: 'latest', label: 'Latest (process everything received first: lowest RPO, slower)' },
  { kind: 'point', label: 'A specific point' },
  { kind: 'time', label: 'The newest point at or before a time' },
];

/** The request's `point`; throws a readable Error when the choice is incomplete (shown in the dialog). */
export function toPointChoice(state: PointPickerState): PointChoice {
  switch (state.kind) {
    case 'point':
      if (!state.pointId) throw new Error('Choose a recovery point from the list.');
      return { kind: 'point', pointId: state.pointId };
    case 'time': {
      const at = new Date(state.at);
      if (!state.at || Number.isNaN(at.getTime())) throw new Error('Enter the date and time of the recovery point.');
      return { kind: 'time', at: at.toISOString() };
    }
    default:
      return { kind: state.kind };
  }
}

/** "01JD3K…7QX" → "01JD3K7Q…": enough of a point id to tell points apart in a list. */
export function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 10)}…` : id;
}

/** A point's disk as the item names it: `sda` of the store disk `<itemId>.sda`. */
export function diskName(storeDisk: string): string {
  return storeDisk.slice(storeDisk.lastIndexOf('.') + 1);
}

export function pointLabel(p: ItemPoint): string {
  return `${formatTime(p.capturedAt)} — ${diskName(p.disk)} — ${p.consistency === 'app' ? 'app-consistent' : 'crash-consistent'} — ${shortId(p.pointId)}`;
}

export function usePointPicker(): [PointPickerState, (s: PointPickerState) => void] {
  const [state, setState] = useState<PointPickerState>(DEFAULT_POINT);
  return [state, setState];
}

/**
 * `points`: the item's points for the list (undefined while they load or when they
 * cannot be read: "a specific point" is then disabled and says why).
 */
export function PointPicker({
  value,
  onChange,
  points,
  pointsUnavailable,
}: {
  value: PointPickerState;
  onChange(s: PointPickerState): void;
  points: readonly ItemPoint[] | undefined;
  pointsUnavailable?: string | undefined;
}) {
  const name = useId();
  const selectId = `${name}-point`;
  const timeId = `${name}-time`;
  const noPoints = !points || points.length === 0;
  return (
    <fieldset>
      <legend>Recovery point</legend>
      {OPTIONS.map((o) => (
        <div key={o.kind}>
          <label>
            <input
              type="radio"
              name={name}
              value={o.kind}
              checked={value.kind === o.kind}
              disabled={o.kind === 'point' && noPoints}
              onChange={() => onChange({ ...value, kind: o.kind })}
            />{' '}
            {o.label}
          </label>
        </div>
      ))}
      {noPoints ? <PointsHint unavailable={pointsUnavailable} /> : null}
      {value.kind === 'point' && points ? (
        <div className="field">
          <label htmlFor={selectId}>Point</label>
          <select id={selectId} value={value.pointId} onChange={(e) => onChange({ ...value, pointId: e.target.value })}>
            <option value="">Choose a point…</option>
            {points.map((p) => (
              <option key={`${p.disk}/${p.pointId}`} value={p.pointId}>
                {pointLabel(p)}
              </option>
            ))}
          </select>
        </div>
      ) : null}
      {value.kind === 'time' ? (
        <div className="field">
          <label htmlFor={timeId}>Time (your local time)</label>
          <input id={timeId} type="datetime-local" step={1} value={value.at} onChange={(e) => onChange({ ...value, at: e.target.value })} />
          <small className="hint">Each disk uses its newest point captured at or before this time.</small>
        </div>
      ) : null}
    </fieldset>
  );
}

function PointsHint({ unavailable }: { unavailable: string | undefined }) {
  return <small className="hint">{unavailable ? `A specific point cannot be chosen: ${unavailable}` : 'A specific point can be chosen once the item has recovery points.'}</small>;
}
