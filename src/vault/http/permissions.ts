import type { Role } from '../../core/model.js';

/**
 * What a route needs. Every route declares exactly one (src/vault/http/route.ts).
 * - read: see anything except secrets;
 * - configure: change configuration (vaults, policies, machines, accounts, servers);
 * - operate: run drills, failovers, commits, reprotects and failbacks;
 * - manage-users: users, roles and other users' tokens.
 */
export type Permission = 'read' | 'configure' | 'operate' | 'manage-users';
export const PERMISSIONS: readonly Permission[] = ['read', 'configure', 'operate', 'manage-users'];

/**
 * Role -> permissions, from issue 3: an operator may run drills and failovers but
 * may not change configuration; a reader only reads. Kept here until a shared
 * src/core/roles.ts exists; when it does, this table should be imported from it.
 */
export const ROLE_PERMISSIONS: Readonly<Record<Role, readonly Permission[]>> = Object.freeze({
  owner: ['read', 'configure', 'operate', 'manage-users'],
  contributor: ['read', 'configure', 'operate'],
  operator: ['read', 'operate'],
  reader: ['read'],
});

export function roleAllows(role: Role, permission: Permission): boolean {
  return ROLE_PERMISSIONS[role]?.includes(permission) ?? false;
}
