/**
 * The role -> permission table lives in src/core/roles.ts (one table for the whole
 * program); the HTTP layer re-exports what it uses so routes import one place.
 */
export { PERMISSIONS, ROLE_PERMISSIONS, can as roleAllows, requirePermission, type Permission } from '../../core/roles.js';
