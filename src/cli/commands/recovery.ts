import type { Command } from 'commander';
import type { Env } from '../context.js';

/** The CLI's test failover, failover, change point, commit, drill settings and reports (docs/recovery.md). */
export function register(_program: Command, _env: Env, _signals: AbortSignal): void {}
