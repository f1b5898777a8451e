/**
 * The role -> permission table lives in src/core/roles.ts (one table for the whole
 * program); the HTTP layer re-exports what it uses so routes import one place.
 */
import { requirePermission as requireCorePermission, type Permission, type Principal as CorePrincipal } from '../../core/roles.js';
import type { Principal } from './types.js';

export { PERMISSIONS, ROLE_PERMISSIONS, can as roleAllows, type Permission } from '../../core/roles.js';

/** core's requirePermission for the HTTP layer's principals (which add the 'agent' kind; core reads the kind for messages only). */
export function requirePermission(principal: Principal | null | undefined, permission: Permission): Principal {
  requireCorePermission(principal as CorePrincipal | null | undefined, permission);
  return principal as Principal;
}
