import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { LifeboatError } from '../core/errors.js';
import type { AgentCommandResult } from '../core/model.js';
import { parseAgentConfig, type AgentConfig } from './config.js';

/**
 * The agent's state directory (default /var/lib/lifeboat/agent):
 *
 *   identity/agent.key       PKCS#8 PEM private key, 0600 — never leaves the machine
 *   identity/agent.crt       the certificate the vault issued (client auth to the process server)
 *   identity/ca.crt          the vault CA (verifies the process server)
 *   identity/credential      bearer token for the agent routes, 0600
 *   identity/enrollment.json { version, machineId, itemId, vaultUrl, enrolledAt }
 *   config.json              the last AgentConfig the vault answered (kept while the vault is unreachable)
 *   commands.json            { version, shutdown, start }: the last shutdown / start request run and its outcome
 *   reverse.json             { version, session }: the disks were written by reverse replication (maps to rebuild)
 *   disks/<name>/state.json  { version, generation, nextSequence, inFlight, lastCommitted, lastAppConsistentAtMs }
 *
 * Every file is replaced atomically (temp, fsync, rename, directory fsync).
 */
export const STATE_VERSION = 1;

export interface InFlightCut {
  readonly cutId: string;
  readonly firstSequence: number;
  /** Known once the cut's last segment was numbered (sent or about to be). */
  readonly lastSequence?: number;
  readonly capturedAtMs: number;
  readonly appConsistent: boolean;
  /** A full compare: committing it restores continuity. */
  readonly full: boolean;
}

export interface DiskState {
  readonly generation: number;
  /** The sequence the next segment gets; WELCOME's ackedSequence + 1 wins after a restart. */
  readonly nextSequence: number;
  readonly inFlight: InFlightCut | null;
  /** The last cut the process server acknowledged whole. */
  readonly lastCommitted: { readonly capturedAtMs: number; readonly lastSequence: number; readonly appConsistent: boolean; readonly full: boolean } | null;
  /** When the last app-consistent cut was captured (its frequency counts from there). */
  readonly lastAppConsistentAtMs: number | null;
}

export interface Enrollment {
  readonly machineId: string;
  readonly itemId: string;
  readonly vaultUrl: string;
  readonly enrolledAt: string;
}

export interface Identity extends Enrollment {
  readonly keyPem: string;
  readonly certificatePem: string;
  readonly caPem: string;
  readonly credential: string;
}

/** Writes `data` to `path` atomically with `mode`: temp file, fsync, rename, directory fsync. */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o644): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LifeboatError('CONFIG_INVALID', `cannot read the agent state file ${path}`, { cause: err, details: { file: path } });
  }
}

function readJson(path: string): unknown {
  const text = readText(path);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    // Written atomically, so a damaged file is not a torn write: say so rather than start over silently.
    throw new LifeboatError('CONFIG_INVALID', `the agent state file ${path} is damaged (not JSON)`, { cause: err, details: { file: path } });
  }
}

export class StateDir {
  constructor(readonly path: string) {}

  private file(...parts: string[]): string {
    return join(this.path, ...parts);
  }

  isEnrolled(): boolean {
    return readText(this.file('identity', 'enrollment.json')) !== undefined && readText(this.file('identity', 'credential')) !== undefined;
  }

  /** Stores what enrollment returned; secrets 0600. The enrollment record is written last: it marks the set complete. */
  saveIdentity(identity: Identity, config: AgentConfig): void {
    mkdirSync(this.path, { recursive: true, mode: 0o700 });
    writeFileAtomic(this.file('identity', 'agent.key'), identity.keyPem, 0o600);
    writeFileAtomic(this.file('identity', 'agent.crt'), identity.certificatePem, 0o644);
    writeFileAtomic(this.file('identity', 'ca.crt'), identity.caPem, 0o644);
    writeFileAtomic(this.file('identity', 'credential'), identity.credential + '\n', 0o600);
    this.saveConfig(config);
    const enrollment: Enrollment & { version: number } = {
      version: STATE_VERSION,
      machineId: identity.machineId,
      itemId: identity.itemId,
      vaultUrl: identity.vaultUrl,
      enrolledAt: identity.enrolledAt,
    };
    writeFileAtomic(this.file('identity', 'enrollment.json'), JSON.stringify(enrollment, null, 2) + '\n', 0o644);
  }

  enrollment(): Enrollment | undefined {
    const raw = readJson(this.file('identity', 'enrollment.json')) as Partial<Enrollment> | undefined;
    if (raw === undefined) return undefined;
    if (typeof raw.machineId !== 'string' || typeof raw.itemId !== 'string' || typeof raw.vaultUrl !== 'string')
      throw new LifeboatError('CONFIG_INVALID', `${this.file('identity', 'enrollment.json')} lacks machineId, itemId or vaultUrl`);
    return { machineId: raw.machineId, itemId: raw.itemId, vaultUrl: raw.vaultUrl, enrolledAt: String(raw.enrolledAt ?? '') };
  }

  /** The full identity; NOT_FOUND when the agent has not enrolled. */
  identity(): Identity {
    const enrollment = this.enrollment();
    const read = (name: string): string => {
      const text = readText(this.file('identity', name));
      if (text === undefined) throw new LifeboatError('NOT_FOUND', `the agent is not enrolled: ${this.file('identity', name)} is missing`);
      return text;
    };
    if (!enrollment) throw new LifeboatError('NOT_FOUND', `the agent is not enrolled (no ${this.file('identity', 'enrollment.json')})`);
    return {
      ...enrollment,
      keyPem: read('agent.key'),
      certificatePem: read('agent.crt'),
      caPem: read('ca.crt'),
      credential: read('credential').trim(),
    };
  }

  saveConfig(config: AgentConfig): void {
    writeFileAtomic(this.file('config.json'), JSON.stringify(config, null, 2) + '\n', 0o644);
  }

  config(): AgentConfig | undefined {
    const raw = readJson(this.file('config.json'));
    return raw === undefined ? undefined : parseAgentConfig(raw);
  }

  diskState(name: string): DiskState | undefined {
    const path = this.file('disks', name, 'state.json');
    const raw = readJson(path) as (Partial<DiskState> & { version?: number }) | undefined;
    if (raw === undefined) return undefined;
    if (raw.version !== STATE_VERSION || typeof raw.generation !== 'number' || typeof raw.nextSequence !== 'number' || raw.nextSequence < 1)
      throw new LifeboatError('CONFIG_INVALID', `${path} is not a version ${STATE_VERSION} disk state`, { details: { file: path } });
    return {
      generation: raw.generation,
      nextSequence: raw.nextSequence,
      inFlight: raw.inFlight ?? null,
      lastCommitted: raw.lastCommitted ?? null,
      lastAppConsistentAtMs: raw.lastAppConsistentAtMs ?? null,
    };
  }

  saveDiskState(name: string, state: DiskState): void {
    writeFileAtomic(this.file('disks', name, 'state.json'), JSON.stringify({ version: STATE_VERSION, ...state }, null, 2) + '\n', 0o644);
  }

  /** The outcome of the last shutdown / start request run (commands.json), so a request is run once whatever restarts. */
  commandResults(): { shutdown: AgentCommandResult | null; start: AgentCommandResult | null } {
    const raw = readJson(this.file('commands.json')) as { shutdown?: AgentCommandResult | null; start?: AgentCommandResult | null } | undefined;
    return { shutdown: raw?.shutdown ?? null, start: raw?.start ?? null };
  }

  saveCommandResults(results: { shutdown: AgentCommandResult | null; start: AgentCommandResult | null }): void {
    writeFileAtomic(this.file('commands.json'), JSON.stringify({ version: STATE_VERSION, ...results }, null, 2) + '\n', 0o644);
  }

  /** The reverse session the disks were last written by (reverse.json), until the digest maps are rebuilt from them. */
  reverseMarker(): { session: string } | undefined {
    const raw = readJson(this.file('reverse.json')) as { session?: string } | undefined;
    return typeof raw?.session === 'string' ? { session: raw.session } : undefined;
  }

  saveReverseMarker(marker: { session: string } | undefined): void {
    if (marker) writeFileAtomic(this.file('reverse.json'), JSON.stringify({ version: STATE_VERSION, ...marker }) + '\n', 0o644);
    else rmSync(this.file('reverse.json'), { force: true });
  }

  diskNames(): string[] {
    try {
      return readdirSync(this.file('disks')).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }
}
