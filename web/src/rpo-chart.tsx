import { formatDuration } from './components';
import type { RpoHistory } from './types';

/**
 * An item's RPO over time as an inline SVG line chart: the samples as a line, the
 * policy's threshold dashed, time along the bottom. The picture is summarised in its
 * aria-label (minimum, maximum, latest, threshold) for those who cannot see it.
 */

const WIDTH = 720;
const HEIGHT = 200;
const PAD = { left: 64, right: 12, top: 12, bottom: 28 };

export function rpoSummary(history: RpoHistory): string {
  const values = history.samples.map((s) => s.rpoSeconds);
  if (values.length === 0) return 'No RPO samples in this period.';
  const latest = values[values.length - 1]!;
  return (
    `RPO over ${values.length} samples: minimum ${formatDuration(Math.min(...values))}, ` +
    `maximum ${formatDuration(Math.max(...values))}, latest ${formatDuration(latest)}; ` +
    `threshold ${formatDuration(history.thresholdSeconds)}.`
  );
}

function timeLabel(ms: number, spanMs: number): string {
  const d = new Date(ms);
  return spanMs > 36 * 3_600_000 ? d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' }) + ' ' + d.toLocaleTimeString(undefined, { hour: '2-digit' }) : d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

export function RpoChart({ history, hours }: { history: RpoHistory; hours: number }) {
  const samples = history.samples.map((s) => ({ t: new Date(s.at).getTime(), v: s.rpoSeconds }));
  if (samples.length === 0) return <p className="muted">No RPO samples in the last {hours} h.</p>;
  const end = Math.max(Date.now(), samples[samples.length - 1]!.t);
  const start = end - hours * 3_600_000;
  const top = Math.max(history.thresholdSeconds * 1.2, ...samples.map((s) => s.v), 1);
  const x = (t: number) => PAD.left + ((t - start) / (end - start)) * (WIDTH - PAD.left - PAD.right);
  const y = (v: number) => PAD.top + (1 - v / top) * (HEIGHT - PAD.top - PAD.bottom);
  const line = samples.map((s, i) => `${i === 0 ? 'M' : 'L'}${x(s.t).toFixed(1)},${y(s.v).toFixed(1)}`).join(' ');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => start + f * (end - start));
  const yTicks = [0, top / 2, top];
  return (
    <svg className="chart" viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={rpoSummary(history)}>
      <line x1={PAD.left} y1={HEIGHT - PAD.bottom} x2={WIDTH - PAD.right} y2={HEIGHT - PAD.bottom} stroke="#9aa5b1" />
      <line x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={HEIGHT - PAD.bottom} stroke="#9aa5b1" />
      {yTicks.map((v) => (
        <text key={v} x={PAD.left - 6} y={y(v) + 4} textAnchor="end" fontSize="11" fill="#5b6670">
          {formatDuration(v)}
        </text>
      ))}
      {ticks.map((t) => (
        <text key={t} x={x(t)} y={HEIGHT - 8} textAnchor="middle" fontSize="11" fill="#5b6670">
          {timeLabel(t, end - start)}
        </text>
      ))}
      <line
        x1={PAD.left}
        x2={WIDTH - PAD.right}
        y1={y(history.thresholdSeconds)}
        y2={y(history.thresholdSeconds)}
        stroke="#b3261e"
        strokeDasharray="6 4"
      />
      <text x={WIDTH - PAD.right - 4} y={y(history.thresholdSeconds) - 4} textAnchor="end" fontSize="11" fill="#b3261e">
        threshold {formatDuration(history.thresholdSeconds)}
      </text>
      <path d={line} fill="none" stroke="#0b5cad" strokeWidth="2" />
      {samples.length === 1 ? <circle cx={x(samples[0]!.t)} cy={y(samples[0]!.v)} r="3" fill="#0b5cad" /> : null}
    </svg>
  );
}
