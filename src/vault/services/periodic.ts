/**
 * Runs `run` now and then `intervalMs` after each run ends (never two at once), until
 * stopped; a failed run goes to `onError` and the next one still comes. The vault's
 * background loops (alert evaluation, RPO sampling, the replica processor) are this.
 */
export class Periodic {
  private timer: NodeJS.Timeout | undefined;
  private current: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly run: () => Promise<unknown>,
    private readonly intervalMs: number,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  start(): void {
    const tick = (): void => {
      if (this.stopped) return;
      this.current = this.run()
        .catch((err: unknown) => {
          if (!this.stopped) this.onError(err);
        })
        .finally(() => {
          if (this.stopped) return;
          this.timer = setTimeout(tick, this.intervalMs);
          this.timer.unref();
        });
    };
    tick();
  }

  /** Resolves once the run under way (if any) has ended; no run starts after. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.current.catch(() => undefined);
  }
}
