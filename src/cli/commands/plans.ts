import type { Command } from 'commander';
import type { Env } from '../context.js';

/** The CLI's recovery plans and acknowledging a plan's manual actions (docs/recovery.md). */
export function register(_program: Command, _env: Env, _signals: AbortSignal): void {}
