import type { TimedResult } from '../exec.js';

/** Directories one backup tool works in; each run starts them empty. */
export interface ToolDirs {
  /** The disk image the tool backs up: the same path for both backups (`disk.img`). */
  readonly workImage: string;
  /** Directory holding workImage; tools that store relative paths run from here. */
  readonly workDir: string;
  /** The tool's repository / store. */
  readonly repoDir: string;
  /** Restores land under here. */
  readonly restoreDir: string;
  /** Tool-private cache and config (restic cache, BORG_BASE_DIR). */
  readonly homeDir: string;
}

export interface BackupRun extends TimedResult {
  /** Scalar fields the tool reported about the run (lifeboat's --json output); shown as extra rows. */
  readonly reported: Readonly<Record<string, string | number | boolean>>;
}

export interface RestoreRun extends TimedResult {
  /** Where the restored image ended up. */
  readonly restoredImage: string;
}

/**
 * The benchmark's view of a backup tool. Every method throws StepError on failure;
 * the harness reports the failure and moves on to the next tool.
 */
export interface BackupTool {
  readonly name: string;
  /** The commands as the harness runs them, for the report. */
  readonly commands: readonly string[];
  version(): string;
  init(dirs: ToolDirs): Promise<void>;
  /** Backs up dirs.workImage; `label` is "first" or "second". */
  backup(dirs: ToolDirs, label: 'first' | 'second'): Promise<BackupRun>;
  /** Restores the latest (second) backup into dirs.restoreDir. */
  restore(dirs: ToolDirs): Promise<RestoreRun>;
}
