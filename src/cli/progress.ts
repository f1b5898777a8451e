import type { Progress as ProgressEvent } from '../store/backup.js';

/**
 * Progress of a long operation on stderr: a line redrawn in place on a
 * terminal, a plain line every few seconds otherwise (logs, CI). Never on
 * stdout, which carries the result (and --json).
 */
export class Progress {
  private lastDraw = 0;
  private readonly started = Date.now();

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly label: string,
    private readonly enabled: boolean,
  ) {}

  update = (p: ProgressEvent): void => {
    if (!this.enabled) return;
    const now = Date.now();
    const tty = this.out.isTTY === true;
    const final = p.doneBytes >= p.totalBytes;
    if (!final && now - this.lastDraw < (tty ? 100 : 5000)) return;
    this.lastDraw = now;
    const pct = p.totalBytes > 0 ? Math.floor((100 * p.doneBytes) / p.totalBytes) : 100;
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? p.doneBytes / secs / 2 ** 20 : 0;
    const line = `${this.label}: ${pct}% (${(p.doneBytes / 2 ** 20).toFixed(0)}/${(p.totalBytes / 2 ** 20).toFixed(0)} MiB, ${rate.toFixed(0)} MiB/s)`;
    this.out.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
  };

  done(): void {
    if (this.enabled && this.out.isTTY === true && this.lastDraw > 0) this.out.write('\n');
  }
}
