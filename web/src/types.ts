/**
 * The shapes the REST API answers with. They are the vault's own domain types
 * (src/core/model.ts), imported as types only: nothing of the vault's code reaches the
 * browser, and a field renamed on the server breaks the portal's type check.
 */
export type {
  Alert,
  AlertKind,
  ChosenPoint,
  ConfigServer,
  DrillReport,
  DrillSettings,
  Job,
  JobKind,
  JobState,
  JobStep,
  ItemState,
  Machine,
  PointChoice,
  ProcessServer,
  PushAccount,
  RecoveredMachine,
  RecoveryPlan,
  RecoveryPlanGroup,
  RegistrationKey,
  ReplicatedItem,
  ReplicationPolicy,
  Role,
  ServerHealth,
  User,
  Vault,
} from '../../src/core/model';
import type { Role, User } from '../../src/core/model';

export type Permission = 'read' | 'configure' | 'operate' | 'manage-users';

/** `GET /api/v1/me`. */
export interface Me {
  readonly kind: 'user' | 'token' | 'server';
  readonly id: string;
  readonly role: Role;
  readonly user: User | null;
}

/** A list route's page (docs/api.md, "Pagination"). */
export interface Page<T> {
  readonly items: readonly T[];
  readonly nextCursor: string | null;
}

/** One recovery point of one of an item's disks (`GET /api/v1/items/:id/points`). */
export interface ItemPoint {
  readonly pointId: string;
  readonly disk: string;
  /** When the source disk was in this state (the cut's capture time). */
  readonly capturedAt: string;
  readonly consistency: 'crash' | 'app';
  readonly sizeBytes: number;
  readonly generation: number;
}

/**
 * `GET /api/v1/items/:id/points?limit=N`: the item's points, newest first (at most
 * `limit`, default 100, over all disks), and per disk the newest processed and the
 * newest app-consistent point (what test failover's "latest processed" and "latest
 * app-consistent" would use); empty when there is none.
 */
export interface ItemPoints {
  readonly items: readonly ItemPoint[];
  readonly latestProcessed: readonly ItemPoint[];
  readonly latestAppConsistent: readonly ItemPoint[];
}

/** `GET /api/v1/items/:id/rpo-history?hours=H` (1..168, default 24): samples oldest first. */
export interface RpoHistory {
  readonly itemId: string;
  readonly thresholdSeconds: number;
  readonly samples: readonly { readonly at: string; readonly rpoSeconds: number }[];
}

/** `POST /api/v1/sessions` `{name, password}` → 201: a session token valid 12 hours. */
export interface SessionAnswer {
  readonly token: string;
  readonly expiresAt: string;
  readonly user: User;
}
