import { createHash } from 'node:crypto';
import { LifeboatError } from '../core/errors.js';
import { DISK_NAME_PATTERN } from '../format/ids.js';
import { SEGMENT_APP_CONSISTENT, SEGMENT_CONTINUES, SEGMENT_PARTIAL } from '../format/segment.js';
import { FrameType, FRAME_TYPE_NAMES, MAX_SEGMENT_DATA_BYTES, type Frame } from './frame.js';

/**
 * The messages of protocol version 1 (docs/replication.md, "Wire protocol") and
 * their validation. Every parser checks every field: its presence, its JSON
 * type, integers for numbers, ranges; fields the protocol does not define are
 * refused. Any failure is PROTOCOL_INVALID naming the field.
 */

export const PROTOCOL_VERSION = 1;
/** How far the agent's clock may be from the process server's. */
export const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;
/** Unacknowledged segments an agent keeps in flight by default. */
export const DEFAULT_WINDOW = 8;
export const DEFAULT_PORT = 9443;
const MAX_GENERATION = 0xffffffff;
const KNOWN_SEGMENT_FLAGS = SEGMENT_PARTIAL | SEGMENT_APP_CONSISTENT | SEGMENT_CONTINUES;

export interface DiskGeneration {
  /** The store disk name (`<itemId>.<diskName>`, AgentConfig.disks[].storeDisk). */
  readonly disk: string;
  readonly generation: number;
}

export interface Hello {
  readonly protocol: 1;
  readonly machineId: string;
  readonly disks: readonly DiskGeneration[];
  readonly clockMs: number;
}

export interface WelcomeDisk extends DiskGeneration {
  /** The highest sequence the process server ever acknowledged for this disk and generation (0: none). */
  readonly ackedSequence: number;
}

export interface Welcome {
  readonly disks: readonly WelcomeDisk[];
}

export interface ExtentHeader {
  readonly offset: number;
  readonly length: number;
}

export interface SegmentHeader {
  readonly disk: string;
  readonly generation: number;
  readonly sequence: number;
  /** SEGMENT_PARTIAL | SEGMENT_APP_CONSISTENT | SEGMENT_CONTINUES (src/format/segment.ts). */
  readonly flags: number;
  readonly diskSizeBytes: number;
  readonly capturedAtMs: number;
  readonly extents: readonly ExtentHeader[];
  /** SHA-256 of the body, lowercase hex. */
  readonly sha256: string;
}

export interface Ack {
  readonly disk: string;
  readonly generation: number;
  readonly sequence: number;
}

export interface ErrorMessage {
  readonly code: string;
  readonly message: string;
  readonly disk?: string;
  readonly sequence?: number;
}

export interface Ping {
  readonly at: number;
}

/** A segment as the agent hands it over: the header fields the client derives (extent lengths, sha256) are computed. */
export interface OutgoingSegment {
  readonly disk: string;
  readonly generation: number;
  readonly sequence: number;
  readonly flags: number;
  readonly diskSizeBytes: number;
  readonly capturedAtMs: number;
  readonly extents: readonly { readonly offset: number; readonly data: Buffer }[];
}

// ---- field checks --------------------------------------------------------

function invalid(what: string, message: string): LifeboatError {
  return new LifeboatError('PROTOCOL_INVALID', `${what}: ${message}`);
}

/** Refuses fields outside `required` and `optional`, and missing required ones. */
function fields(obj: Record<string, unknown>, what: string, required: readonly string[], optional: readonly string[] = []): void {
  for (const key of Object.keys(obj)) {
    if (!required.includes(key) && !optional.includes(key)) throw invalid(what, `unknown field ${JSON.stringify(key)}`);
  }
  for (const key of required) if (!(key in obj)) throw invalid(what, `missing field ${JSON.stringify(key)}`);
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(what, 'must be an object');
  return value as Record<string, unknown>;
}

function integer(value: unknown, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw invalid(what, 'must be an integer');
  if (value < min || value > max) throw invalid(what, `must be from ${min} to ${max}`);
  return value;
}

function string(value: unknown, what: string, maxLength = 1024): string {
  if (typeof value !== 'string') throw invalid(what, 'must be a string');
  if (value.length > maxLength) throw invalid(what, `must be at most ${maxLength} characters`);
  return value;
}

function diskName(value: unknown, what: string): string {
  const s = string(value, what, 128);
  if (!DISK_NAME_PATTERN.test(s)) throw invalid(what, `${JSON.stringify(s)} is not a store disk name`);
  return s;
}

function array(value: unknown, what: string, maxItems: number): unknown[] {
  if (!Array.isArray(value)) throw invalid(what, 'must be an array');
  if (value.length > maxItems) throw invalid(what, `must have at most ${maxItems} items`);
  return value;
}

function noBody(frame: Frame): void {
  if (frame.body.length !== 0) throw invalid(FRAME_TYPE_NAMES[frame.type] ?? 'frame', 'must have an empty body');
}

function diskGeneration(value: unknown, what: string): DiskGeneration {
  const o = object(value, what);
  fields(o, what, ['disk', 'generation']);
  return { disk: diskName(o.disk, `${what}.disk`), generation: integer(o.generation, `${what}.generation`, 0, MAX_GENERATION) };
}

function noDuplicateDisks(disks: readonly DiskGeneration[], what: string): void {
  const seen = new Set<string>();
  for (const d of disks) {
    if (seen.has(d.disk)) throw invalid(what, `disk ${d.disk} is listed twice`);
    seen.add(d.disk);
  }
}

// ---- parsers -------------------------------------------------------------

/** The validated header of a frame of the expected type. */
function expect(frame: Frame, type: FrameType): Record<string, unknown> {
  if (frame.type !== type) throw invalid('frame', `expected ${FRAME_TYPE_NAMES[type]}, got ${FRAME_TYPE_NAMES[frame.type] ?? frame.type}`);
  return frame.header;
}

export function parseHello(frame: Frame): Hello {
  const h = expect(frame, FrameType.HELLO);
  noBody(frame);
  fields(h, 'HELLO', ['protocol', 'machineId', 'disks', 'clockMs']);
  if (h.protocol !== PROTOCOL_VERSION) throw invalid('HELLO.protocol', `must be ${PROTOCOL_VERSION}`);
  const machineId = string(h.machineId, 'HELLO.machineId', 128);
  if (machineId.length === 0) throw invalid('HELLO.machineId', 'must not be empty');
  const disks = array(h.disks, 'HELLO.disks', 256).map((d, i) => diskGeneration(d, `HELLO.disks[${i}]`));
  if (disks.length === 0) throw invalid('HELLO.disks', 'must name at least one disk');
  noDuplicateDisks(disks, 'HELLO.disks');
  return { protocol: PROTOCOL_VERSION, machineId, disks, clockMs: integer(h.clockMs, 'HELLO.clockMs', 0) };
}

export function parseWelcome(frame: Frame): Welcome {
  const h = expect(frame, FrameType.WELCOME);
  noBody(frame);
  fields(h, 'WELCOME', ['disks']);
  const disks = array(h.disks, 'WELCOME.disks', 256).map((d, i) => {
    const what = `WELCOME.disks[${i}]`;
    const o = object(d, what);
    fields(o, what, ['disk', 'generation', 'ackedSequence']);
    return {
      disk: diskName(o.disk, `${what}.disk`),
      generation: integer(o.generation, `${what}.generation`, 0, MAX_GENERATION),
      ackedSequence: integer(o.ackedSequence, `${what}.ackedSequence`, 0),
    };
  });
  noDuplicateDisks(disks, 'WELCOME.disks');
  return { disks };
}

/**
 * Validates a SEGMENT header against its body: extents ascending, not
 * overlapping, each non-empty and inside diskSizeBytes; the body as long as
 * the extents together (≤ 16 MiB) and hashing to `sha256`.
 */
export function parseSegment(frame: Frame): SegmentHeader {
  const h = expect(frame, FrameType.SEGMENT);
  fields(h, 'SEGMENT', ['disk', 'generation', 'sequence', 'flags', 'diskSizeBytes', 'capturedAtMs', 'extents', 'sha256']);
  const disk = diskName(h.disk, 'SEGMENT.disk');
  const generation = integer(h.generation, 'SEGMENT.generation', 0, MAX_GENERATION);
  const sequence = integer(h.sequence, 'SEGMENT.sequence', 1);
  const flags = integer(h.flags, 'SEGMENT.flags', 0, 0xffff);
  if ((flags & ~KNOWN_SEGMENT_FLAGS) !== 0) throw invalid('SEGMENT.flags', `unknown flags 0x${flags.toString(16)}`);
  const diskSizeBytes = integer(h.diskSizeBytes, 'SEGMENT.diskSizeBytes', 0);
  const capturedAtMs = integer(h.capturedAtMs, 'SEGMENT.capturedAtMs', 0);
  const rawExtents = array(h.extents, 'SEGMENT.extents', 1 << 20);
  const extents: ExtentHeader[] = [];
  let end = 0;
  let total = 0;
  for (let i = 0; i < rawExtents.length; i++) {
    const what = `SEGMENT.extents[${i}]`;
    const o = object(rawExtents[i], what);
    fields(o, what, ['offset', 'length']);
    const offset = integer(o.offset, `${what}.offset`, 0);
    const length = integer(o.length, `${what}.length`, 1, MAX_SEGMENT_DATA_BYTES);
    if (offset < end) throw invalid(what, 'overlaps the previous extent or is not in ascending order');
    if (offset + length > diskSizeBytes) throw invalid(what, `ends at ${offset + length}, past the disk (${diskSizeBytes} bytes)`);
    end = offset + length;
    total += length;
    if (total > MAX_SEGMENT_DATA_BYTES) throw invalid('SEGMENT.extents', `hold more than ${MAX_SEGMENT_DATA_BYTES} bytes`);
    extents.push({ offset, length });
  }
  const sha256 = string(h.sha256, 'SEGMENT.sha256', 64);
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalid('SEGMENT.sha256', 'must be 64 lowercase hex digits');
  if (frame.body.length !== total) throw invalid('SEGMENT', `body is ${frame.body.length} bytes, the extents add up to ${total}`);
  if (createHash('sha256').update(frame.body).digest('hex') !== sha256) throw invalid('SEGMENT.sha256', 'does not match the body');
  return { disk, generation, sequence, flags, diskSizeBytes, capturedAtMs, extents, sha256 };
}

export function parseAck(frame: Frame): Ack {
  const h = expect(frame, FrameType.ACK);
  noBody(frame);
  fields(h, 'ACK', ['disk', 'generation', 'sequence']);
  return { disk: diskName(h.disk, 'ACK.disk'), generation: integer(h.generation, 'ACK.generation', 0, MAX_GENERATION), sequence: integer(h.sequence, 'ACK.sequence', 1) };
}

export function parseError(frame: Frame): ErrorMessage {
  const h = expect(frame, FrameType.ERROR);
  noBody(frame);
  fields(h, 'ERROR', ['code', 'message'], ['disk', 'sequence']);
  return {
    code: string(h.code, 'ERROR.code', 64),
    message: string(h.message, 'ERROR.message', 4096),
    ...(h.disk === undefined ? {} : { disk: diskName(h.disk, 'ERROR.disk') }),
    ...(h.sequence === undefined ? {} : { sequence: integer(h.sequence, 'ERROR.sequence', 0) }),
  };
}

/** PING and PONG share one header. */
export function parsePing(frame: Frame): Ping {
  if (frame.type !== FrameType.PING && frame.type !== FrameType.PONG) throw invalid('frame', `expected PING or PONG, got ${FRAME_TYPE_NAMES[frame.type]}`);
  noBody(frame);
  fields(frame.header, FRAME_TYPE_NAMES[frame.type] as string, ['at']);
  return { at: integer(frame.header.at, `${FRAME_TYPE_NAMES[frame.type]}.at`, 0) };
}

// ---- builders --------------------------------------------------------------

/**
 * The header and body of an outgoing segment: extent lengths and the body's
 * SHA-256 are derived from the data. The result passes parseSegment, or this
 * throws PROTOCOL_INVALID (the sender finds out, not the peer).
 */
export function segmentFrameParts(s: OutgoingSegment): { header: SegmentHeader; body: Buffer } {
  const body = s.extents.length === 1 ? (s.extents[0] as { data: Buffer }).data : Buffer.concat(s.extents.map((e) => e.data));
  const header: SegmentHeader = {
    disk: s.disk,
    generation: s.generation,
    sequence: s.sequence,
    flags: s.flags,
    diskSizeBytes: s.diskSizeBytes,
    capturedAtMs: s.capturedAtMs,
    extents: s.extents.map((e) => ({ offset: e.offset, length: e.data.length })),
    sha256: createHash('sha256').update(body).digest('hex'),
  };
  parseSegment({ type: FrameType.SEGMENT, header: header as unknown as Record<string, unknown>, headerBytes: Buffer.alloc(0), body });
  return { header, body };
}
