import { useCallback, useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { api, readableError } from './api';

/**
 * What every page shares: loading a resource (and polling it), running an action
 * (busy while it runs, its error kept), headings, error messages, badges, progress
 * bars, confirmation dialogs and form fields. Every control carries a label; dialogs
 * are native <dialog> elements (focus is trapped and Escape closes them).
 */

export interface Resource<T> {
  readonly data: T | undefined;
  readonly error: unknown;
  readonly loading: boolean;
  /** When the last load ended (null: not yet). */
  readonly updatedAt: Date | null;
  reload(): void;
}

/**
 * Loads with `load` whenever `key` changes (null: nothing yet) and again every
 * `refreshMs` when given; keeps the last data while reloading, and the last error until
 * a load succeeds. The one loading hook the pages' hooks are built on.
 */
export function useLoaded<T>(key: string | null, load: (signal: AbortSignal) => Promise<T>, refreshMs?: number): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(key !== null);
  const [updatedAt, setUpdatedAt] = useState<Date | null>(null);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const loader = useRef(load);
  loader.current = load;
  useEffect(() => {
    if (key === null) return;
    const abort = new AbortController();
    setLoading(true);
    loader
      .current(abort.signal)
      .then((d) => {
        setData(d);
        setError(null);
        setUpdatedAt(new Date());
      })
      .catch((err: unknown) => {
        if (!abort.signal.aborted) setError(err);
      })
      .finally(() => {
        if (!abort.signal.aborted) setLoading(false);
      });
    return () => abort.abort();
  }, [key, tick]);
  useEffect(() => {
    if (!refreshMs || key === null) return;
    const t = setInterval(reload, refreshMs);
    return () => clearInterval(t);
  }, [refreshMs, key, reload]);
  return { data, error, loading, updatedAt, reload };
}

/** GETs `path` (null: nothing yet), again every `refreshMs` when given. */
export function useResource<T>(path: string | null, refreshMs?: number): Resource<T> {
  return useLoaded(path, (signal) => api.get<T>(path as string, signal), refreshMs);
}

export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  useEffect(() => {
    document.title = `${title} — Lifeboat`;
  }, [title]);
  return (
    <div className="page-header">
      <h1>{title}</h1>
      {children ? <div className="page-actions">{children}</div> : null}
    </div>
  );
}

export function ErrorMessage({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <div className="error" role="alert">
      {readableError(error)}
    </div>
  );
}

/** A resource's state: its error, "Loading…" the first time, else the children. */
export function Loaded<T>({ resource, children }: { resource: Resource<T>; children: (data: T) => ReactNode }) {
  if (resource.data === undefined) {
    if (resource.error) return <ErrorMessage error={resource.error} />;
    return <p aria-live="polite">Loading…</p>;
  }
  return (
    <>
      {resource.error ? <ErrorMessage error={resource.error} /> : null}
      {children(resource.data)}
    </>
  );
}

const TONES: Record<string, string> = {
  healthy: 'good',
  protected: 'good',
  succeeded: 'good',
  passed: 'good',
  running: 'busy',
  queued: 'busy',
  'initial-replication': 'busy',
  enabling: 'busy',
  warning: 'warn',
  'test-failover': 'warn',
  critical: 'bad',
  failed: 'bad',
};

/** A state or health word with its colour; the word itself is always shown (colour is never the only cue). */
export function Badge({ value }: { value: string }) {
  return <span className={`badge badge-${TONES[value] ?? 'neutral'}`}>{value}</span>;
}

export function ProgressBar({ percent, label }: { percent: number; label: string }) {
  const p = Math.max(0, Math.min(100, Math.round(percent)));
  return (
    <div className="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={p}>
      <div className="progress-fill" style={{ width: `${p}%` }} />
      <span className="progress-text">{p} %</span>
    </div>
  );
}

export interface Action {
  /** True while `run` is under way (a submit button shows it and is disabled). */
  readonly busy: boolean;
  /** What the last run threw (null: nothing); shown with <ErrorMessage>. */
  readonly error: unknown;
  setError(error: unknown): void;
  /**
   * Runs `work`: clears the error, is busy until it ends, and keeps what it threw in
   * `error`. Never rejects; resolves to whether `work` succeeded, so a caller can close
   * its dialog or reset its form on success.
   */
  run(work: () => Promise<void>): Promise<boolean>;
}

/** The one way a form or button runs an API call: its busy flag and its error. */
export function useAction(): Action {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = useCallback(async (work: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await work();
      return true;
    } catch (err) {
      setError(err);
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, setError, run };
}

export interface ConfirmProps {
  /** The button that opens the dialog. */
  readonly label: string;
  readonly title: string;
  /** What will happen, in a sentence or two. */
  readonly children?: ReactNode;
  readonly confirmLabel?: string;
  readonly danger?: boolean;
  readonly disabled?: boolean;
  /** Runs on confirm; an error is shown in the dialog, which stays open. */
  onConfirm(): Promise<void>;
}

/**
 * An action behind a confirmation: a button, then a modal dialog with what will
 * happen, the dialog's own fields (children) and Confirm / Cancel.
 */
export function ConfirmAction({ label, title, children, confirmLabel, danger, disabled, onConfirm }: ConfirmProps) {
  const dialog = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const { busy, error, setError, run } = useAction();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (await run(onConfirm)) dialog.current?.close();
  };
  return (
    <>
      <button type="button" className={danger ? 'danger' : undefined} disabled={disabled} onClick={() => dialog.current?.showModal()}>
        {label}
      </button>
      <dialog ref={dialog} aria-labelledby={titleId} onClose={() => setError(null)}>
        <form onSubmit={submit}>
          <h2 id={titleId}>{title}</h2>
          {children}
          <ErrorMessage error={error} />
          <div className="dialog-actions">
            <button type="submit" className={danger ? 'danger' : 'primary'} disabled={busy}>
              {busy ? 'Working…' : (confirmLabel ?? 'Confirm')}
            </button>
            <button type="button" onClick={() => dialog.current?.close()}>
              Cancel
            </button>
          </div>
        </form>
      </dialog>
    </>
  );
}

/** A labelled input; `hint` is read out with it (aria-describedby). */
export function Field({
  label,
  hint,
  children,
}: {
  label: string;
  hint?: string;
  children: (props: { id: string; 'aria-describedby'?: string }) => ReactNode;
}) {
  const id = useId();
  const hintId = `${id}-hint`;
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children({ id, ...(hint ? { 'aria-describedby': hintId } : {}) })}
      {hint ? (
        <small id={hintId} className="hint">
          {hint}
        </small>
      ) : null}
    </div>
  );
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** "42 s", "3 min 5 s", "2 h 4 min", "3 d 1 h". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** "time ago" from an ISO time, against now. */
export function formatAge(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  return `${formatDuration(Math.max(0, (now - new Date(iso).getTime()) / 1000))} ago`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
