/**
 * The shapes the REST API answers with. They are the vault's own domain types
 * (src/core/model.ts), imported as types only: nothing of the vault's code reaches the
 * browser, and a field renamed on the server breaks the portal's type check.
 */
export type {
  Alert,
  AlertKind,
  Agent,
  ChosenPoint,
  ItemPoint,
  ItemPoints,
  ConfigServer,
  DrillReport,
  DrillSettings,
  DrillSummary,
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
  RpoHistory,
  ReplicatedItem,
  ReplicationPolicy,
  Role,
  ServerHealth,
  User,
  Vault,
} from '../../src/core/model';
import type { Role, User } from '../../src/core/model';

/**
 * The item state machine itself (pure rules, no I/O): the portal offers exactly the
 * actions the vault would accept in an item's state.
 */
export { ITEM_STATES, allowedActions, type ItemAction } from '../../src/core/item-state';

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

/** `POST /api/v1/sessions` `{name, password}` → 201: a session token valid 12 hours. */
export interface SessionAnswer {
  readonly token: string;
  readonly expiresAt: string;
  readonly user: User;
}
