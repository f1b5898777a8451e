import { readFileSync } from 'node:fs';
import type { TrackerKind } from '../changetracking/tracker.js';
import { LifeboatError } from '../core/errors.js';
import type { AgentConfig, AgentMode, AgentReverseRequest, ProcessServerEndpoint } from '../core/model.js';

/**
 * agent.json: what this machine protects and how (written by hand or by the
 * installer; read once at start-up, validated into a frozen object).
 *
 * {
 *   "disks": [{ "name": "root", "tracker": { "kind": "scan", "path": "/dev/vda" } }],
 *   "freeze": { "mountPoints": ["/"], "preScripts": [], "postScripts": [], "timeoutMs": 10000 },
 *   "maxBytesPerSec": 0,
 *   "machine": { "shutdownCommand": ["systemctl", "poweroff"], "startCommand": [], "timeoutMs": 60000 }
 * }
 *
 * `tracker` is handed to the change-tracking registry as is: `kind` picks the
 * driver, the other keys are that driver's options. A disk's `file` is the image
 * file or block device reverse replication writes (reprotect, failback) and reads
 * for its digests; default: the tracker's `path`. `machine` holds the commands the
 * vault may ask the agent to run once (argv, no shell): shut the machine down
 * (failover) and start it (failback).
 */
export interface DiskSpec {
  /** The disk's name on this machine: letters, digits, `-`, `_`, `.` (the store disk is `<itemId>.<name>`). */
  readonly name: string;
  readonly tracker: { readonly kind: TrackerKind; readonly [option: string]: unknown };
  /** The disk's image file or block device for reverse replication; undefined when neither it nor the tracker's `path` names one. */
  readonly file?: string;
}

export interface MachineSpec {
  /** argv of the command that shuts this machine down (empty: none configured). */
  readonly shutdownCommand: readonly string[];
  /** argv of the command that starts the protected machine (empty: none configured). */
  readonly startCommand: readonly string[];
  /** A command still running after this long is killed and reported failed. */
  readonly timeoutMs: number;
}

export interface FreezeSpec {
  readonly mountPoints: readonly string[];
  /** Commands run (no shell) before freezing, in order; a non-zero exit skips the freeze. */
  readonly preScripts: readonly string[];
  /** Commands run after thawing, in order, whenever the pre-scripts were started. */
  readonly postScripts: readonly string[];
  /** From the first pre-script on, the filesystems are thawed after this long whatever happens. */
  readonly timeoutMs: number;
}

export interface AgentFileConfig {
  readonly disks: readonly DiskSpec[];
  readonly freeze: FreezeSpec;
  /** Local cap on bytes sent per second, 0 = none; the vault's throttle applies too (the lower wins). */
  readonly maxBytesPerSec: number;
  readonly machine: MachineSpec;
}

/** The vault's answer (src/core/model.ts): the same type on both sides of the API. */
export type { AgentConfig };
export type ProcessServerAddress = ProcessServerEndpoint;

export const DEFAULT_FREEZE_TIMEOUT_MS = 10_000;
export const DEFAULT_MACHINE_COMMAND_TIMEOUT_MS = 120_000;
const DISK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const KINDS: readonly TrackerKind[] = ['scan', 'journal', 'qemu'];
const MODES: readonly AgentMode[] = ['replicate', 'fenced', 'reverse'];

function invalid(path: string, message: string): never {
  throw new LifeboatError('CONFIG_INVALID', `${path}: ${message}`, { details: { file: path } });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function strings(v: unknown, what: string, path: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s.length === 0)) invalid(path, `${what} must be a list of non-empty strings`);
  return [...(v as string[])];
}

/** Validates agent.json's parsed content; `path` names the file in errors. */
export function parseAgentFileConfig(raw: unknown, path = 'agent.json'): AgentFileConfig {
  if (!isObject(raw)) invalid(path, 'must be a JSON object');
  for (const key of Object.keys(raw)) if (!['disks', 'freeze', 'maxBytesPerSec', 'machine'].includes(key)) invalid(path, `unknown key ${JSON.stringify(key)}`);
  if (!Array.isArray(raw.disks) || raw.disks.length === 0) invalid(path, 'disks must list at least one disk');
  const names = new Set<string>();
  const disks = raw.disks.map((d: unknown, i: number): DiskSpec => {
    if (!isObject(d)) invalid(path, `disks[${i}] must be an object`);
    if (typeof d.name !== 'string' || !DISK_NAME.test(d.name)) invalid(path, `disks[${i}].name must be 1-63 letters, digits, '-', '_' or '.'`);
    if (names.has(d.name)) invalid(path, `disk ${JSON.stringify(d.name)} is listed twice`);
    names.add(d.name);
    if (!isObject(d.tracker) || !KINDS.includes(d.tracker.kind as TrackerKind))
      invalid(path, `disks[${i}].tracker.kind must be one of ${KINDS.join(', ')}`);
    for (const key of Object.keys(d)) if (!['name', 'tracker', 'file'].includes(key)) invalid(path, `unknown key disks[${i}].${key}`);
    if (d.file !== undefined && (typeof d.file !== 'string' || !d.file.startsWith('/'))) invalid(path, `disks[${i}].file must be an absolute path`);
    const trackerPath = typeof d.tracker.path === 'string' && d.tracker.path.length > 0 ? d.tracker.path : undefined;
    const file = (d.file as string | undefined) ?? trackerPath;
    return Object.freeze({ name: d.name, tracker: Object.freeze({ ...(d.tracker as DiskSpec['tracker']) }), ...(file === undefined ? {} : { file }) });
  });
  const f = raw.freeze ?? {};
  if (!isObject(f)) invalid(path, 'freeze must be an object');
  for (const key of Object.keys(f)) if (!['mountPoints', 'preScripts', 'postScripts', 'timeoutMs'].includes(key)) invalid(path, `unknown key freeze.${key}`);
  const timeoutMs = f.timeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 600_000)
    invalid(path, 'freeze.timeoutMs must be a whole number of milliseconds from 100 to 600000');
  const maxBytesPerSec = raw.maxBytesPerSec ?? 0;
  if (typeof maxBytesPerSec !== 'number' || !Number.isSafeInteger(maxBytesPerSec) || maxBytesPerSec < 0)
    invalid(path, 'maxBytesPerSec must be a whole number ≥ 0 (0 = no limit)');
  const m = raw.machine ?? {};
  if (!isObject(m)) invalid(path, 'machine must be an object');
  for (const key of Object.keys(m)) if (!['shutdownCommand', 'startCommand', 'timeoutMs'].includes(key)) invalid(path, `unknown key machine.${key}`);
  const commandTimeoutMs = m.timeoutMs ?? DEFAULT_MACHINE_COMMAND_TIMEOUT_MS;
  if (typeof commandTimeoutMs !== 'number' || !Number.isInteger(commandTimeoutMs) || commandTimeoutMs < 100 || commandTimeoutMs > 3_600_000)
    invalid(path, 'machine.timeoutMs must be a whole number of milliseconds from 100 to 3600000');
  return Object.freeze({
    disks: Object.freeze(disks),
    machine: Object.freeze({
      shutdownCommand: Object.freeze(strings(m.shutdownCommand, 'machine.shutdownCommand', path)),
      startCommand: Object.freeze(strings(m.startCommand, 'machine.startCommand', path)),
      timeoutMs: commandTimeoutMs,
    }),
    freeze: Object.freeze({
      mountPoints: Object.freeze(strings(f.mountPoints, 'freeze.mountPoints', path)),
      preScripts: Object.freeze(strings(f.preScripts, 'freeze.preScripts', path)),
      postScripts: Object.freeze(strings(f.postScripts, 'freeze.postScripts', path)),
      timeoutMs,
    }),
    maxBytesPerSec,
  });
}

export function readAgentFileConfig(path: string): AgentFileConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new LifeboatError('CONFIG_INVALID', `cannot read the agent configuration ${path}`, { cause: err, details: { file: path } });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new LifeboatError('CONFIG_INVALID', `${path} is not valid JSON`, { cause: err, details: { file: path } });
  }
  return parseAgentFileConfig(raw, path);
}

/** Checks the vault's answer before the agent obeys it; a malformed answer is kept out (the last good one stays). */
export function parseAgentConfig(raw: unknown): AgentConfig {
  const bad = (what: string): never => {
    throw new LifeboatError('API_ERROR', `the vault's agent configuration is malformed: ${what}`);
  };
  if (!isObject(raw)) bad('not an object');
  const r = raw as Record<string, unknown>;
  const num = (k: string): number => {
    const v = r[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) bad(`${k} must be a number ≥ 0`);
    return v as number;
  };
  if (typeof r.paused !== 'boolean') bad('paused must be a boolean');
  const ps = r.processServer;
  if (!isObject(ps) || typeof ps.host !== 'string' || typeof ps.port !== 'number' || (ps.serverName !== undefined && typeof ps.serverName !== 'string'))
    bad('processServer must be { host, port, serverName }');
  const p = ps as Record<string, unknown>;
  if (!Array.isArray(r.disks)) bad('disks must be a list');
  const disks = (r.disks as unknown[]).map((d) => {
    if (!isObject(d) || typeof d.name !== 'string' || typeof d.storeDisk !== 'string') bad('disks must be [{ name, storeDisk }]');
    const dd = d as { name: string; storeDisk: string };
    return Object.freeze({ name: dd.name, storeDisk: dd.storeDisk });
  });
  const crash = num('crashConsistentFrequencySeconds');
  if (crash < 1) bad('crashConsistentFrequencySeconds must be ≥ 1');
  if (r.mode !== undefined && !MODES.includes(r.mode as AgentMode)) bad(`mode must be one of ${MODES.join(', ')}`);
  const request = (k: string): { id: string } | null => {
    const v = r[k];
    if (v === undefined || v === null) return null;
    if (!isObject(v) || typeof v.id !== 'string' || v.id === '') bad(`${k} must be { id } or null`);
    return Object.freeze({ id: (v as { id: string }).id });
  };
  let reverse: AgentReverseRequest | null = null;
  if (r.reverse !== undefined && r.reverse !== null) {
    const v = r.reverse;
    if (!isObject(v) || typeof v.session !== 'string' || (v.digestsWanted !== null && v.digestsWanted !== undefined && typeof v.digestsWanted !== 'string'))
      bad('reverse must be { session, digestsWanted } or null');
    const rv = v as { session: string; digestsWanted?: string | null };
    reverse = Object.freeze({ session: rv.session, digestsWanted: rv.digestsWanted ?? null });
  }
  return Object.freeze({
    // Absent fields stay absent (an older vault's answer reads as it was written).
    ...(r.mode === undefined ? {} : { mode: r.mode as AgentMode }),
    ...(r.shutdownRequest === undefined ? {} : { shutdownRequest: request('shutdownRequest') }),
    ...(r.startRequest === undefined ? {} : { startRequest: request('startRequest') }),
    ...(r.reverse === undefined ? {} : { reverse }),
    generation: num('generation'),
    paused: r.paused as boolean,
    throttleBytesPerSec: num('throttleBytesPerSec'),
    crashConsistentFrequencySeconds: crash,
    appConsistentFrequencyMinutes: num('appConsistentFrequencyMinutes'),
    disks: Object.freeze(disks),
    processServer: Object.freeze({ host: p.host as string, port: p.port as number, serverName: (p.serverName as string | undefined) ?? (p.host as string) }),
  });
}
