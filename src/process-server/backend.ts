import type { Repository } from '../store/repository.js';

/**
 * What the process server needs from the vault. The vault implements it
 * (directly when the process server runs inside `lifeboat server`); tests use
 * a fake.
 */
export interface ProcessServerBackend {
  /**
   * Throws LifeboatError AGENT_UNAUTHORIZED when the machine is unknown,
   * unprotected, or the certificate serial is not its current one.
   * `certificateSerial` is lower-case hex without leading zeros.
   */
  authorize(input: { machineId: string; certificateSerial: string }): Promise<AgentGrant>;
  /** The opened store (Repository) of a vault. */
  repository(vaultId: string): Promise<Repository>;
}

export interface AgentGrant {
  readonly machineId: string;
  readonly itemId: string;
  readonly vaultId: string;
  /** The item's current source generation: older ones are fenced. */
  readonly generation: number;
  /** The store disk names (`<itemId>.<diskName>`) the machine may send. */
  readonly disks: readonly string[];
}

/** A pino-compatible logger: structured fields first, a constant message second. */
export interface ProcessServerLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export const silentLogger: ProcessServerLogger = { info: () => {}, warn: () => {}, error: () => {} };
