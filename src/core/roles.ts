/**
 * Who may do what. Four roles (seed names, as in Azure RBAC for Site Recovery):
 * owner does everything; contributor configures and operates; operator runs
 * drills and failovers but never changes configuration; reader only reads.
 * The HTTP layer names one permission per endpoint and calls
 * `requirePermission` before anything else (a role x endpoint matrix test).
 */
import { LifeboatError } from './errors.js';
import type { Role } from './model.js';

export const PERMISSIONS = [
  /** List and show every resource, jobs, alerts, the audit log. */
  'read',
  /** Create or change vaults, policies, machines, push accounts, registration keys, servers, item settings. */
  'configure',
  /** Test failover, cleanup, failover, change point, commit, reprotect, failback, job cancel. */
  'operate',
  /** Users, roles and API tokens of others. */
  'manage-users',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

export const ROLE_PERMISSIONS: Readonly<Record<Role, readonly Permission[]>> = {
  owner: ['read', 'configure', 'operate', 'manage-users'],
  contributor: ['read', 'configure', 'operate'],
  operator: ['read', 'operate'],
  reader: ['read'],
};

/** A caller: a user (session), an API token acting with its user's role, or a registered server/agent. */
export interface Principal {
  readonly kind: 'user' | 'token' | 'server';
  readonly id: string;
  readonly role: Role;
}

export function can(role: Role, permission: Permission): boolean {
  // Own properties only: a role named 'constructor' from a tampered token must not reach the prototype.
  return Object.hasOwn(ROLE_PERMISSIONS, role) && ROLE_PERMISSIONS[role].includes(permission);
}

/** Throws UNAUTHENTICATED without a principal, FORBIDDEN naming the role and permission when it lacks it. */
export function requirePermission(principal: Principal | null | undefined, permission: Permission): Principal {
  if (!principal) throw new LifeboatError('UNAUTHENTICATED', 'authentication required', { details: { permission } });
  if (!can(principal.role, permission)) {
    throw new LifeboatError('FORBIDDEN', `role '${principal.role}' lacks permission '${permission}' (${principal.kind} ${principal.id})`, {
      details: { role: principal.role, permission, principal: `${principal.kind}:${principal.id}` },
    });
  }
  return principal;
}
