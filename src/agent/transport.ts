import type { LifeboatError } from '../core/errors.js';
import type { DiskGeneration, OutgoingSegment, Welcome } from '../protocol/messages.js';
import type { ProcessServerAddress } from './config.js';

/**
 * One connection to a process server, as the agent uses it. The protocol's
 * ReplicationClient (src/protocol/client.ts) is one; tests use an in-memory
 * fake. Contract:
 * - the factory resolves after WELCOME (`welcome` holds ackedSequence per disk)
 *   and rejects with a LifeboatError (GENERATION_FENCED naming `details.disk`,
 *   SERVER_UNREACHABLE, AGENT_UNAUTHORIZED, ...);
 * - `sendSegment` resolves once the process server acknowledged the segment (it
 *   is on its disk) and rejects when the connection ends first;
 * - a failed transport is not reused: `closed` resolves with the error that ended
 *   it, and the agent connects again.
 */
export interface Transport {
  readonly welcome: Welcome;
  sendSegment(segment: OutgoingSegment): Promise<unknown>;
  readonly closed: Promise<LifeboatError | undefined>;
  close(): Promise<void>;
}

export interface ConnectRequest {
  readonly processServer: ProcessServerAddress;
  readonly machineId: string;
  /** Store disks (`<itemId>.<diskName>`) with the agent's generation of each. */
  readonly disks: readonly DiskGeneration[];
}

export type TransportFactory = (request: ConnectRequest) => Promise<Transport>;
